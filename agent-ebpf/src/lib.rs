//! Empty library target: lets the agent list this crate as a build dependency (the programs are in the binary target).
#![no_std]
