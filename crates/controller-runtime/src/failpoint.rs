//! Named crash points for restart tests: in debug builds, `OPSY_FAILPOINT=<name>` makes the process abort (no
//! cleanup, like SIGKILL) the first time it reaches [`failpoint`]`(<name>)`. Release builds compile it to nothing,
//! so production binaries cannot be crashed this way.

/// Aborts the process when `OPSY_FAILPOINT` names `name` (debug builds only).
pub fn failpoint(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("OPSY_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting the process");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
