//! Goroutine-local storage: `goroutine_local!`, like `thread_local!` but per goroutine.
//!
//! Each goroutine's G holds, created on first use, a small map from a key's address (each
//! `goroutine_local!` static is one key) to its value. Only the goroutine itself touches its
//! map, so there is no synchronisation. Each value is its own heap allocation, held as a raw
//! pointer (from `Box::into_raw`): a `with` nested inside another may add an entry and move the
//! map's vector, and moving a `Box` would assert unique access to a value the outer `with`
//! still lends out; moving a raw pointer asserts nothing. Entries are never removed while the
//! goroutine runs.
//!
//! Lifetime: a value is created lazily on a goroutine's first `with`, and dropped *inside* the
//! goroutine when it returns (after its function, before its result is published), so its
//! destructor runs in goroutine context and may use the runtime. A destructor that touches a
//! goroutine-local again re-creates it; that is dropped in a further round, up to
//! `DTOR_ROUNDS`, after which the rest is leaked (std's thread-locals behave the same way).
//! A panicking destructor becomes the goroutine's panic if it had none.
//!
//! On a plain thread the same key is a thread-local (one value per thread), so code using it
//! works both inside and outside goroutines.
//!
//! Rejected: storing values in the M's thread-locals and swapping them on every switch
//! (costs every switch, and goroutines move between Ms), and `thread_local!`-style static
//! slots indexed per goroutine (a table per key sized by the goroutine count).

use std::any::Any;
use std::cell::UnsafeCell;

/// Drop rounds at goroutine exit before values re-created by destructors are leaked.
const DTOR_ROUNDS: usize = 4;

/// One goroutine's (or plain thread's) values, keyed by the address of their key. Each value
/// pointer comes from `Box::into_raw` and is owned by the map.
#[derive(Default)]
pub(crate) struct LocalMap {
    entries: Vec<(usize, *mut dyn Any)>,
}

impl LocalMap {
    /// Takes the values out, as boxes, leaving the map empty.
    fn take_values(&mut self) -> Vec<Box<dyn Any>> {
        std::mem::take(&mut self.entries)
            .into_iter()
            // SAFETY: each pointer came from `Box::into_raw` and leaves the map here, once.
            .map(|(_, v)| unsafe { Box::from_raw(v) })
            .collect()
    }
}

impl Drop for LocalMap {
    fn drop(&mut self) {
        drop(self.take_values());
    }
}

/// A goroutine-local key, made by [`goroutine_local!`](crate::goroutine_local).
///
/// A key is identified by its address, so two keys must never share one. Statics never do;
/// but `&GoroutineLocalKey::new(f)` written as an expression could be promoted to a constant
/// that the compiler may merge with another of the same value, and two keys of different
/// types would then read each other's values as the wrong type. The interior-mutable field
/// makes a key impossible to promote (and `with` takes `&'static self`), so only a `static`
/// can be a key. Both of these are refused:
///
/// ```compile_fail
/// # extern crate goro_runtime as goro;
/// fn init() -> u32 { 7 }
/// // A promoted key in a static's initialiser.
/// static KEY: &goro::GoroutineLocalKey<u32> = &goro::GoroutineLocalKey::new(init);
/// ```
///
/// ```compile_fail
/// # extern crate goro_runtime as goro;
/// fn init() -> u32 { 7 }
/// // A `const` key: each use would be a promoted copy at an address of its own.
/// const KEY: goro::GoroutineLocalKey<u32> = goro::GoroutineLocalKey::new(init);
/// KEY.with(|v| assert_eq!(*v, 7));
/// ```
pub struct GoroutineLocalKey<T: 'static> {
    init: fn() -> T,
    _not_promotable: std::sync::atomic::AtomicU8,
}

impl<T: 'static> GoroutineLocalKey<T> {
    #[doc(hidden)]
    pub const fn new(init: fn() -> T) -> GoroutineLocalKey<T> {
        GoroutineLocalKey {
            init,
            _not_promotable: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// Runs `f` with this goroutine's value (created with the initialiser on first use). On a
    /// plain thread, with this thread's value.
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        let key = self as *const Self as usize;
        let value: *const T = with_map(|map| {
            // SAFETY: the map belongs to the running goroutine (or this thread) and no
            // reference into the vector itself outlives this block.
            let map = unsafe { &mut *map };
            match map.entries.iter().find(|(k, _)| *k == key) {
                // One key, one type: each key is a `static` with its own address, and its entry
                // was made by its own `with` as a `T`.
                Some(&(_, v)) => {
                    // SAFETY: `v` is a live value owned by the map (never freed while running).
                    debug_assert!(unsafe { (*v).is::<T>() });
                    v.cast::<T>() as *const T
                }
                None => std::ptr::null(),
            }
        });
        let value = if value.is_null() {
            // Initialise outside any borrow of the map: the initialiser may use other keys.
            let raw: *mut dyn Any = Box::into_raw(Box::new((self.init)()) as Box<dyn Any>);
            with_map(|map| {
                // SAFETY: as above.
                let map = unsafe { &mut *map };
                map.entries.push((key, raw));
                raw.cast::<T>() as *const T
            })
        } else {
            value
        };
        // SAFETY: the value is a heap allocation owned by the current goroutine's (or thread's)
        // map, which never frees entries while the goroutine runs: it stays put while `f`
        // runs, even if `f` adds entries (only the pointers move). Only shared references to
        // it are ever handed out.
        f(unsafe { &*value })
    }
}

thread_local! {
    /// Plain threads' values.
    static THREAD_MAP: UnsafeCell<LocalMap> = UnsafeCell::new(LocalMap::default());
}

/// Runs `f` with a pointer to the current goroutine's map (created if needed), or the thread's.
fn with_map<R>(f: impl FnOnce(*mut LocalMap) -> R) -> R {
    let in_goroutine = crate::tls::with_current_g(|g| {
        // A G with no frame has not started: the shutdown is dropping its closure, whose
        // destructors get the thread's values, as on a plain thread.
        g.and_then(|g| g.try_frame()).map(|frame| {
            // SAFETY: `locals` is touched only by the goroutine itself, which is the caller.
            let slot = unsafe { &mut *frame.locals.get() };
            slot.get_or_insert_with(Default::default).as_mut() as *mut LocalMap
        })
    });
    match in_goroutine {
        Some(map) => f(map),
        None => THREAD_MAP.with(|m| f(m.get())),
    }
}

/// Drops the current goroutine's values, in goroutine context, at its exit. Returns the payload
/// of the first destructor that panicked.
pub(crate) fn drop_goroutine_locals(
    slot: &UnsafeCell<Option<Box<LocalMap>>>,
) -> Option<Box<dyn Any + Send>> {
    let mut first_panic = None;
    for _ in 0..DTOR_ROUNDS {
        // SAFETY: called by the goroutine itself as it exits: no other user of `locals`, and no
        // reference into the map is live (no `with` is running).
        let Some(mut map) = (unsafe { (*slot.get()).take() }) else {
            return first_panic;
        };
        for v in map.take_values() {
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(v))) {
                first_panic.get_or_insert(p);
            }
        }
    }
    // Values re-created in every round are leaked (see the module comment).
    // SAFETY: as above.
    std::mem::forget(unsafe { (*slot.get()).take() });
    first_panic
}

/// Declares goroutine-local statics, like `thread_local!`: each goroutine gets its own value,
/// created on first use and dropped when the goroutine returns. On a plain thread a key acts as
/// a thread-local.
///
/// ```
/// # extern crate goro_runtime as goro;
/// use std::cell::Cell;
/// goro::goroutine_local! {
///     static REQUESTS: Cell<u32> = Cell::new(0);
/// }
/// goro::run(|| {
///     let h = goro::spawn(|| {
///         REQUESTS.with(|r| r.set(r.get() + 1));
///         REQUESTS.with(|r| r.get())
///     });
///     REQUESTS.with(|r| r.set(10));
///     assert_eq!(h.join().unwrap(), 1); // its own counter
///     assert_eq!(REQUESTS.with(|r| r.get()), 10);
/// });
/// ```
#[macro_export]
macro_rules! goroutine_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr; $($rest:tt)*) => {
        $(#[$attr])*
        $vis static $name: $crate::GoroutineLocalKey<$t> = $crate::GoroutineLocalKey::new({
            fn __goro_local_init() -> $t {
                $init
            }
            __goro_local_init
        });
        $crate::goroutine_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr) => {
        $crate::goroutine_local!($(#[$attr])* $vis static $name: $t = $init;);
    };
}
