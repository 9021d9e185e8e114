//! Pacing: `GOGC`, the heap goal and the trigger, and `set_gc_percent`.
//!
//! Go 1.18's goal: `goal = marked + (marked + stacks) × GOGC/100`, at least
//! `4 MiB × GOGC/100`. The trigger is set so that marking ends near the goal: the last cycle's
//! growth during marking is taken as the next one's, and the trigger is `goal − 1.2 × growth`,
//! clamped to 60–95% of the runway (`goal − marked`). The trigger is compared with the bytes of
//! allocated objects at each span refill.
//! `GOGC=off` (or a negative percent) stops automatic cycles; `collect()` still runs one.
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::collector::{CycleReport, TRIGGER};

const HEAP_MIN: usize = 4 << 20;

static PERCENT: AtomicI32 = AtomicI32::new(100);
static GOAL: AtomicUsize = AtomicUsize::new(HEAP_MIN);
static MARKED: AtomicUsize = AtomicUsize::new(0);
static STACKS: AtomicUsize = AtomicUsize::new(0);
static GROWTH: AtomicUsize = AtomicUsize::new(0);
static BROKEN: AtomicBool = AtomicBool::new(false);
static INIT: OnceLock<()> = OnceLock::new();

/// Parses `GOGC` into a percent (`None` = off), or says what is wrong with it.
pub fn parse_gogc(v: &str) -> Result<Option<i32>, String> {
    let t = v.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match t.parse::<i64>() {
        Ok(n) if n < 0 => Ok(None),
        Ok(n) if n <= i32::MAX as i64 => Ok(Some(n as i32)),
        _ => Err(format!(
            "GOGC={v:?}: want a percentage (e.g. 100) or \"off\""
        )),
    }
}

/// Reads `GOGC` and `GORO_DEBUG` once. A bad `GOGC` is a clear error naming the variable, and
/// the process exits (as a bad flag would), rather than running with a setting nobody asked for.
pub fn init() {
    INIT.get_or_init(|| {
        if let Ok(v) = std::env::var("GOGC") {
            match parse_gogc(&v) {
                Ok(Some(n)) => PERCENT.store(n, Ordering::Relaxed),
                Ok(None) => PERCENT.store(-1, Ordering::Relaxed),
                Err(e) => {
                    eprintln!("goro: {e}");
                    std::process::exit(2);
                }
            }
        }
        crate::stats::init_trace();
        GOAL.store(
            goal_for(0, 0, PERCENT.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
    });
}

fn goal_for(marked: usize, stacks: usize, pct: i32) -> usize {
    if pct < 0 {
        return usize::MAX;
    }
    let p = pct as u128;
    let g = marked as u128 + (marked as u128 + stacks as u128) * p / 100;
    let min = HEAP_MIN as u128 * p / 100;
    g.max(min).min(usize::MAX as u128 / 2) as usize
}

fn trigger_for(marked: usize, goal: usize, growth: usize) -> usize {
    if goal == usize::MAX {
        return usize::MAX;
    }
    let runway = goal.saturating_sub(marked);
    let lo = marked + runway * 6 / 10;
    let hi = marked + runway * 95 / 100;
    goal.saturating_sub(growth + growth / 5).clamp(lo, hi)
}

pub(crate) fn initial_trigger() -> usize {
    let g = GOAL.load(Ordering::Relaxed);
    trigger_for(0, g, g / 8)
}

/// The current heap goal (bytes).
pub(crate) fn goal() -> usize {
    GOAL.load(Ordering::Relaxed)
}

pub(crate) fn after_cycle(r: &CycleReport) {
    MARKED.store(r.marked, Ordering::Relaxed);
    STACKS.store(r.stacks, Ordering::Relaxed);
    GROWTH.store(r.heap_end.saturating_sub(r.heap_start), Ordering::Relaxed);
    retarget();
}

fn retarget() {
    let pct = PERCENT.load(Ordering::Relaxed);
    let marked = MARKED.load(Ordering::Relaxed);
    let goal = goal_for(marked, STACKS.load(Ordering::Relaxed), pct);
    GOAL.store(goal, Ordering::Relaxed);
    let t = if BROKEN.load(Ordering::Relaxed) {
        usize::MAX
    } else {
        trigger_for(marked, goal, GROWTH.load(Ordering::Relaxed))
    };
    TRIGGER.store(t, Ordering::Relaxed);
}

/// Sets the collection target percentage (Go's `debug.SetGCPercent`) and returns the previous
/// one; negative turns automatic collection off (`collect()` still runs a cycle).
pub fn set_gc_percent(percent: i32) -> i32 {
    init();
    let old = PERCENT.swap(percent.max(-1), Ordering::Relaxed);
    retarget();
    old
}

pub(crate) fn disable_forever() {
    BROKEN.store(true, Ordering::Relaxed);
    TRIGGER.store(usize::MAX, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gogc_values() {
        assert_eq!(parse_gogc("100"), Ok(Some(100)));
        assert_eq!(parse_gogc("off"), Ok(None));
        assert_eq!(parse_gogc("OFF"), Ok(None));
        assert_eq!(parse_gogc("-1"), Ok(None));
        assert!(parse_gogc("fast").unwrap_err().contains("GOGC"));
        assert!(parse_gogc("").is_err());
    }

    #[test]
    fn goal_is_go_1_18s() {
        assert_eq!(goal_for(100 << 20, 0, 100), 200 << 20);
        assert_eq!(goal_for(100 << 20, 10 << 20, 100), 210 << 20);
        assert_eq!(goal_for(0, 0, 100), HEAP_MIN);
        assert_eq!(goal_for(0, 0, 50), HEAP_MIN / 2);
        assert_eq!(goal_for(1, 1, -1), usize::MAX);
    }

    #[test]
    fn trigger_inside_the_runway() {
        let t = trigger_for(100, 200, 0);
        assert_eq!(t, 195);
        let t = trigger_for(100, 200, 1000);
        assert_eq!(t, 160);
    }
}
