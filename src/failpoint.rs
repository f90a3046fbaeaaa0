//! Crash-test hooks. Built with the `failpoints` feature, [`hit`] aborts the process (no
//! destructors, no flushing: as close to a kill as a process can do to itself) when
//! `HENB_FAILPOINT` names the point, as `name` or `name@N` for its N-th hit. Without the
//! feature it compiles to nothing; device builds never have it.

/// A place where state changes (see the call sites for the list).
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static COUNTS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
    let Ok(want) = std::env::var("HENB_FAILPOINT") else { return };
    let (point, nth) = match want.split_once('@') {
        Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
        None => (want, 1),
    };
    if point != name {
        return;
    }
    let mut counts = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let c = counts.get_or_insert_with(HashMap::new).entry(point).or_insert(0);
    *c += 1;
    if *c == nth {
        eprintln!("failpoint {name}@{nth}: abort");
        std::process::abort();
    }
}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Whether `HENB_FAILPOINT` names `name` (a behaviour switch for tests, not an abort).
#[cfg(feature = "failpoints")]
pub fn active(name: &str) -> bool {
    std::env::var("HENB_FAILPOINT").is_ok_and(|w| w == name)
}

/// Without the `failpoints` feature: never.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn active(_name: &str) -> bool {
    false
}
