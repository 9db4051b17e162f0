//! Builds the kernel programs (crate `sockeye-agent-ebpf`) for the BPF target
//! with the nightly toolchain, so the agent binary can embed the object.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "sockeye-agent-ebpf")
        .ok_or_else(|| anyhow!("sockeye-agent-ebpf package not found"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root.as_str(),
        ..Default::default()
    };
    // Checkouts of this repository (git worktrees) that share one target
    // directory share this build script's results too: cargo hashes
    // workspace packages by their path relative to the workspace root, so
    // the recorded rerun-if-changed path may be another checkout's, and the
    // agent would embed that checkout's kernel programs. Cargo's working
    // directory tells the checkouts apart.
    println!("cargo:rerun-if-env-changed=PWD");
    // aya-build passes every line the inner cargo writes to stderr on as a
    // `cargo:warning`, so its progress ("Compiling core ...", "Finished")
    // showed as some 35 `warning:` lines on every fresh build. Quiet drops
    // only that progress: compiler warnings and errors reach aya-build as
    // JSON messages on stdout and are still shown, and cargo's own errors
    // are still written to stderr.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    let toolchain = pinned_nightly(root.as_std_path())?;
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))
}

/// The nightly channel in `agent-ebpf/rust-toolchain.toml`: the one place it
/// is named (bootstrap and the image build read it too).
fn pinned_nightly(ebpf_root: &std::path::Path) -> anyhow::Result<String> {
    let file = ebpf_root.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={}", file.display());
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .find(|v| v.starts_with("nightly-"))
        .ok_or_else(|| anyhow!("{} names no nightly-YYYY-MM-DD channel", file.display()))
}
