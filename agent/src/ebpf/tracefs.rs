//! Tracepoint record layouts, read from tracefs at load time because field
//! offsets differ between kernel versions.

use std::{collections::HashMap, path::Path};

use sockeye_common::tracepoint::{TracepointOffsets, ABSENT};

/// Where the agent looks for tracefs (the only place it is mounted on modern
/// systems; `/sys/kernel/debug/tracing` is a legacy alias).
pub const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted at {path}; mount it (`mount -t tracefs nodev {path}`) or, in Kubernetes, mount the host's {path} into the agent")]
    NotMounted { path: String },
    #[error("cannot read the format of tracepoint {tracepoint} at {path}")]
    Format {
        tracepoint: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Field name -> byte offset, parsed from a tracepoint `format` file.
pub fn parse_format(text: &str) -> HashMap<String, u32> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let offset = rest
            .split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        // The first segment is the C declaration: the name is its last token,
        // minus any array suffix ("__u8 saddr[4]" -> "saddr").
        let name = rest
            .split(';')
            .next()
            .and_then(|d| d.split_whitespace().last())
            .map(|n| n.split('[').next().unwrap_or(n));
        if let (Some(name), Some(offset)) = (name, offset) {
            fields.insert(name.to_string(), offset);
        }
    }
    fields
}

fn read_fields(
    root: &Path,
    category: &str,
    name: &str,
) -> Result<HashMap<String, u32>, TracefsError> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Format {
        tracepoint: format!("{category}:{name}"),
        path: path.display().to_string(),
        source,
    })?;
    Ok(parse_format(&text))
}

/// Checks that tracefs is mounted; the error says how to fix it.
pub fn check_mounted(root: &Path) -> Result<(), TracefsError> {
    if root.join("events").is_dir() {
        Ok(())
    } else {
        Err(TracefsError::NotMounted {
            path: root.display().to_string(),
        })
    }
}

/// Offsets of the fields the tracepoint programs read. A tracepoint that
/// does not exist, or lacks a field, leaves its offsets at [`ABSENT`]; the
/// returned list names what is missing so the loader can disable it.
pub fn tracepoint_offsets(root: &Path) -> (TracepointOffsets, Vec<TracefsError>) {
    let mut out = TracepointOffsets {
        mkdir_root: ABSENT,
        mkdir_id: ABSENT,
        mkdir_path: ABSENT,
        connect_ret: ABSENT,
        socket_family: ABSENT,
        socket_ret: ABSENT,
    };
    let mut errors = Vec::new();
    let get = |f: &HashMap<String, u32>, n: &str| f.get(n).copied().unwrap_or(ABSENT);
    match read_fields(root, "cgroup", "cgroup_mkdir") {
        Ok(f) => {
            out.mkdir_root = get(&f, "root");
            out.mkdir_id = get(&f, "id");
            out.mkdir_path = get(&f, "path");
        }
        Err(e) => errors.push(e),
    }
    // Present only on kernels built with CONFIG_FTRACE_SYSCALLS.
    let syscalls = [
        ("sys_exit_connect", &mut out.connect_ret, "ret"),
        ("sys_enter_socket", &mut out.socket_family, "family"),
        ("sys_exit_socket", &mut out.socket_ret, "ret"),
    ];
    let mut formats: HashMap<&str, Option<HashMap<String, u32>>> = HashMap::new();
    for (tracepoint, slot, field) in syscalls {
        let fields = formats.entry(tracepoint).or_insert_with(|| {
            match read_fields(root, "syscalls", tracepoint) {
                Ok(f) => Some(f),
                Err(e) => {
                    errors.push(e);
                    None
                }
            }
        });
        if let Some(f) = fields {
            *slot = get(f, field);
        }
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESET_FORMAT: &str = "name: tcp_receive_reset
ID: 1500
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u16 sport;\toffset:16;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:18;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:20;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:22;\tsize:4;\tsigned:0;
\tfield:__u64 sock_cookie;\toffset:64;\tsize:8;\tsigned:0;

print fmt: \"family=%s\"";

    #[test]
    fn parses_names_and_offsets() {
        let f = parse_format(RESET_FORMAT);
        assert_eq!(f["sport"], 16);
        assert_eq!(f["dport"], 18);
        assert_eq!(f["family"], 20);
        assert_eq!(f["saddr"], 22);
        assert_eq!(f["skaddr"], 8);
        assert_eq!(f["sock_cookie"], 64);
        assert_eq!(f["common_type"], 0);
    }

    #[test]
    fn garbage_yields_no_fields() {
        assert!(parse_format("field:;;;\nfield:int x;offset:zz;\n").is_empty());
    }

    #[test]
    fn missing_tracefs_is_reported_with_a_fix() {
        let dir = std::env::temp_dir().join(format!("sockeye-notracefs-{}", std::process::id()));
        let err = check_mounted(&dir).unwrap_err().to_string();
        assert!(err.contains("mount -t tracefs"), "{err}");
        let (off, errs) = tracepoint_offsets(&dir);
        assert_eq!(off.mkdir_path, ABSENT);
        assert_eq!((off.connect_ret, off.socket_family), (ABSENT, ABSENT));
        assert_eq!(errs.len(), 4, "{errs:?}");
    }
}
