// `/proc/self/status` readings for the memory rows, shared by goro's bench code and the Rust
// peers (each `include!`s this file, so the peers stay standalone crates).

/// A `kB` field of `/proc/self/status` (`"VmRSS:"`, `"VmHWM:"`, ...) in bytes; 0 if unreadable.
#[allow(dead_code)] // the million example includes this through spawn_idle.rs and reads none
fn proc_status_bytes(field: &str) -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .unwrap_or(0)
        * 1024
}
