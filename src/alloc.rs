//! canopy's global allocator: mimalloc, plus a memory allowance a thread
//! can take on for a piece of untrusted work (one template render).
//!
//! minijinja's fuel charges the data a template makes, and is the limit
//! that normally stops a hungry template, with an error naming it. But fuel
//! only covers the paths minijinja charges; one it misses (for instance
//! minijinja 3.1 flattening a chain of more than 32 list `+` without
//! charging the items) could otherwise take all the machine's memory. The
//! allowance is the backstop: it counts the bytes a thread acquires while
//! it holds one, and when they pass the allowance the process says what it
//! was rendering and exits with code 2. An allocator cannot fail a render
//! gracefully (it must not unwind, and a null return aborts), so exiting
//! is the one bounded outcome; the render stage comes before any write, so
//! nothing of that revision was applied.
//!
//! Below every other module: it imports nothing of canopy's.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::marker::PhantomData;

/// The allocator the `canopy` binary installs.
pub struct Canopy;

thread_local! {
    /// Bytes this thread may still acquire; `usize::MAX` when it holds no
    /// allowance. Const-initialised without a destructor, so reading it
    /// from inside the allocator allocates nothing.
    static LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// The pieces of the message to print when the allowance runs out
    /// (borrowed from the live [`Allowance`]).
    static WHAT: Cell<(*const &'static str, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

/// Counts `n` bytes against this thread's allowance, if it has one.
#[inline]
fn charge(n: usize) {
    let _ = LEFT.try_with(|left| {
        let l = left.get();
        if l == usize::MAX {
            return;
        }
        if n >= l {
            exhausted();
        }
        left.set(l - n);
    });
}

/// Prints the allowance's message and ends the process. Allocates nothing.
#[cold]
fn exhausted() -> ! {
    let (ptr, n) = WHAT.try_with(Cell::get).unwrap_or((std::ptr::null(), 0));
    let fallback: &[&str] = &["canopy: error: a render passed canopy's memory limit\n"];
    // SAFETY: `ptr`/`n` come from the slice the live `Allowance` borrows,
    // whose pieces it borrows too (or the static fallback).
    let parts: &[&str] = if ptr.is_null() {
        fallback
    } else {
        unsafe { std::slice::from_raw_parts(ptr, n) }
    };
    // SAFETY: write(2) and _exit(2) are async-signal-safe and allocate
    // nothing.
    unsafe {
        for p in parts {
            libc::write(2, p.as_ptr().cast(), p.len());
        }
        libc::_exit(2)
    }
}

// SAFETY: every call is forwarded to mimalloc unchanged; the only addition
// is `charge`, which touches a const thread-local and never allocates.
unsafe impl GlobalAlloc for Canopy {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        charge(new_size.saturating_sub(layout.size()));
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// A memory allowance held by the current thread until dropped: the bytes
/// it acquires (growth only; frees are not credited, so a loop that builds
/// and drops is still bounded in total) may not pass `bytes`. Allowances
/// nest; the inner one replaces the outer until it is dropped. Only counts
/// when the process runs on [`Canopy`] (the binary; not the library's unit
/// tests).
pub struct Allowance<'m> {
    allowed: usize,
    outer: (usize, (*const &'static str, usize)),
    /// Borrows the message and stays on its thread.
    _message: PhantomData<(&'m [&'m str], *const ())>,
}

/// Takes an allowance of `bytes` for this thread. `message` is printed,
/// piece after piece, if the allowance runs out (end it with a newline).
/// In pieces so that a caller names what it renders without formatting a
/// message for every render, nearly all of which never need it.
pub fn allow<'m>(bytes: usize, message: &'m [&'m str]) -> Allowance<'m> {
    let allowed = bytes.min(usize::MAX - 1);
    // The lifetime is erased only for the thread-local; the Allowance
    // borrows `message` for 'm and takes the pointer back when dropped.
    let ptr = message.as_ptr().cast::<&'static str>();
    let outer = (
        LEFT.with(|l| l.replace(allowed)),
        WHAT.with(|w| w.replace((ptr, message.len()))),
    );
    Allowance {
        allowed,
        outer,
        _message: PhantomData,
    }
}

/// A render that acquired more than this hands its freed memory back to the
/// system when it ends: mimalloc otherwise keeps it for the thread, and two
/// threads each keeping a large render's pages while the other renders
/// doubled validate's peak (428 MiB against 139 MiB, measured on the
/// issue 13 list-doubling template).
const GIVE_BACK: usize = 16 << 20;

impl Drop for Allowance<'_> {
    fn drop(&mut self) {
        let left = LEFT.with(Cell::get);
        if self.allowed.saturating_sub(left) > GIVE_BACK {
            // SAFETY: mi_collect only walks this thread's mimalloc heap; it is
            // harmless (a no-op for our pages) when mimalloc is not the
            // global allocator, as in the library's unit tests.
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
        LEFT.with(|l| l.set(self.outer.0));
        WHAT.with(|w| w.set(self.outer.1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unit tests run on the system allocator, so this checks the
    /// bookkeeping: an allowance counts down as `charge` is called, nests,
    /// and restores the outer state when dropped.
    #[test]
    fn allowances_nest_and_restore() {
        assert_eq!(LEFT.with(Cell::get), usize::MAX);
        {
            let _outer = allow(1000, &["outer", "\n"]);
            charge(100);
            assert_eq!(LEFT.with(Cell::get), 900);
            {
                let _inner = allow(50, &["inner\n"]);
                charge(10);
                assert_eq!(LEFT.with(Cell::get), 40);
                assert_eq!(WHAT.with(Cell::get).1, 1);
            }
            assert_eq!(LEFT.with(Cell::get), 900);
            assert_eq!(WHAT.with(Cell::get).1, 2);
        }
        assert_eq!(LEFT.with(Cell::get), usize::MAX);
        charge(usize::MAX - 1);
        assert_eq!(LEFT.with(Cell::get), usize::MAX);
    }
}
