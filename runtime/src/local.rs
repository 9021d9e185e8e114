//! Goroutine-local storage: `goroutine_local!`, like `thread_local!` but per goroutine.
//!
//! Each goroutine's G holds, created on first use, a small map from a key's address (each
//! `goroutine_local!` static is one key) to its boxed value. Only the goroutine itself touches
//! its map, so there is no synchronisation. Values are boxed so that a `with` nested inside
//! another (which may add an entry and move the map's vector) never moves a value someone holds
//! a reference to; entries are never removed while the goroutine runs.
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

/// One goroutine's (or plain thread's) values, keyed by the address of their key.
#[derive(Default)]
pub(crate) struct LocalMap {
    entries: Vec<(usize, Box<dyn Any>)>,
}

/// A goroutine-local key, made by [`goroutine_local!`](crate::goroutine_local).
pub struct GoroutineLocalKey<T: 'static> {
    init: fn() -> T,
}

impl<T: 'static> GoroutineLocalKey<T> {
    #[doc(hidden)]
    pub const fn new(init: fn() -> T) -> GoroutineLocalKey<T> {
        GoroutineLocalKey { init }
    }

    /// Runs `f` with this goroutine's value (created with the initialiser on first use). On a
    /// plain thread, with this thread's value.
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        let key = self as *const Self as usize;
        let value: *const T = with_map(|map| {
            // SAFETY: the map belongs to the running goroutine (or this thread) and no
            // reference into the vector itself outlives this block.
            let map = unsafe { &mut *map };
            if let Some((_, v)) = map.entries.iter().find(|(k, _)| *k == key) {
                return v.downcast_ref::<T>().expect("one type per key") as *const T;
            }
            std::ptr::null()
        });
        let value = if value.is_null() {
            // Initialise outside any borrow of the map: the initialiser may use other keys.
            let boxed: Box<dyn Any> = Box::new((self.init)());
            with_map(|map| {
                // SAFETY: as above.
                let map = unsafe { &mut *map };
                let p = boxed.downcast_ref::<T>().expect("just made") as *const T;
                map.entries.push((key, boxed));
                p
            })
        } else {
            value
        };
        // SAFETY: the value is boxed in the current goroutine's (or thread's) map, which never
        // removes entries while the goroutine runs: the box stays put while `f` runs, even if
        // `f` adds entries. Only shared references to it are ever handed out.
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
        g.map(|g| {
            // SAFETY: `locals` is touched only by the goroutine itself, which is the caller.
            let slot = unsafe { &mut *g.locals.get() };
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
        let Some(map) = (unsafe { (*slot.get()).take() }) else {
            return first_panic;
        };
        for (_, v) in map.entries {
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
