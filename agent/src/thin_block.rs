//! [`ThinBlock`]: an immutable, reference-counted slice with an optional extra value, in one
//! allocation behind an 8-byte pointer, with an 8-byte header (a 32-bit count and a 32-bit
//! length). It is what a [`SeriesLabels`](crate::series_labels::SeriesLabels) is made of.
//!
//! Why not `triomphe::ThinArc`, which the sets used before: its block starts with a word of
//! count, the header value and a word of length, so a set paid 32 bytes of header whether it
//! needed the header value (a based set's base and masks, 16 bytes) or not (a whole set). At
//! 500k series the sets are 500,000 blocks (heaptrack on the shared harness: 148,200 whole,
//! 100 bytes each asked for, and 351,800 based, 45): 16 MB of headers, and with glibc's
//! 16-byte size classes a 9-label whole set took a 112-byte chunk and a based set with two
//! labels of its own a 64-byte one. Here a whole set's header is 8 bytes and a based one's 24
//! (96- and 48-byte chunks for those two). docs/performance.md ("Stop 28") has the
//! measurement.
//!
//! The one module with `unsafe`: the block's layout is computed here and nowhere else, and
//! everything outside sees only `&[T]` and `Option<&X>`.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::fmt;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::atomic::{self, AtomicU32, Ordering};

/// The start of every block.
#[repr(C)]
struct Head {
    count: AtomicU32,
    /// The slice's length, with [`HAS_EXTRA`] set when an extra value follows the head.
    len: u32,
}

/// The bit of [`Head::len`] that says the block holds an extra value.
const HAS_EXTRA: u32 = 1 << 31;

/// A count past this aborts, as `Arc`'s does past `isize::MAX`: a count that wrapped would
/// free a block still in use. Half the range leaves room for the increments of threads
/// racing past the check.
const MAX_COUNT: u32 = u32::MAX / 2;

/// An immutable `[T]` and, when built with one, an `X`, shared by reference count. Clones
/// share the block; the last one to drop frees it and drops its contents.
pub struct ThinBlock<X, T> {
    head: NonNull<Head>,
    /// The block owns an `X` and `T`s (for drop checking and auto traits).
    _owns: PhantomData<(X, T)>,
}

// SAFETY: the block is immutable but for its atomic count, so sharing or sending a handle
// shares or sends `&X` and `&T` (and, on the last drop, drops them on that thread): sound
// when both are `Send + Sync`, as for `Arc`.
unsafe impl<X: Send + Sync, T: Send + Sync> Send for ThinBlock<X, T> {}
// SAFETY: as above.
unsafe impl<X: Send + Sync, T: Send + Sync> Sync for ThinBlock<X, T> {}

/// Where a block's parts are.
struct Parts {
    layout: Layout,
    extra_at: usize,
    items_at: usize,
}

/// The layout of a block of `len` items, with an extra value or not. `Layout::extend` aligns
/// each part, so the offsets are valid for any `X` and `T`.
#[inline]
fn parts<X, T>(extra: bool, len: usize) -> Parts {
    const BAD: &str = "a block's size fits in isize";
    let head = Layout::new::<Head>();
    let (with_extra, extra_at) = if extra { head.extend(Layout::new::<X>()).expect(BAD) } else { (head, 0) };
    let (layout, items_at) = with_extra.extend(Layout::array::<T>(len).expect(BAD)).expect(BAD);
    Parts { layout: layout.pad_to_align(), extra_at, items_at }
}

impl<X, T> ThinBlock<X, T> {
    /// A block holding `items` (moved in, the vector's buffer freed) and `extra`.
    pub fn new(extra: Option<X>, mut items: Vec<T>) -> ThinBlock<X, T> {
        let len = items.len();
        let len32 = u32::try_from(len).ok().filter(|&l| l < HAS_EXTRA).expect("fewer than 2^31 items");
        let p = parts::<X, T>(extra.is_some(), len);
        // SAFETY: the layout is not zero-sized: it starts with a `Head`.
        let block = unsafe { alloc::alloc(p.layout) };
        let Some(head) = NonNull::new(block.cast::<Head>()) else { alloc::handle_alloc_error(p.layout) };
        let flag = if extra.is_some() { HAS_EXTRA } else { 0 };
        // SAFETY: `block` is a fresh allocation of `p.layout`, which has room, aligned, for a
        // `Head` at 0, an `X` at `extra_at` when `extra` is given, and `len` `T`s at
        // `items_at`. The items are moved by copying their bytes; `set_len(0)` then makes the
        // vector forget them, so they are not dropped twice, and it frees only its buffer.
        unsafe {
            head.as_ptr().write(Head { count: AtomicU32::new(1), len: len32 | flag });
            if let Some(x) = extra {
                block.add(p.extra_at).cast::<X>().write(x);
            }
            ptr::copy_nonoverlapping(items.as_ptr(), block.add(p.items_at).cast::<T>(), len);
            items.set_len(0);
        }
        ThinBlock { head, _owns: PhantomData }
    }

    #[inline]
    fn head(&self) -> &Head {
        // SAFETY: the block lives while any handle does, and its head is never written
        // after `new` but for the atomic count.
        unsafe { self.head.as_ref() }
    }

    /// Whether an extra value is held, and the slice's length.
    #[inline]
    fn shape(&self) -> (bool, usize) {
        let len = self.head().len;
        (len & HAS_EXTRA != 0, (len & !HAS_EXTRA) as usize)
    }

    /// The extra value, if the block was built with one.
    #[inline]
    pub fn extra(&self) -> Option<&X> {
        let (extra, _) = self.shape();
        if !extra {
            return None;
        }
        let at = parts::<X, T>(true, 0).extra_at;
        // SAFETY: `new` wrote an `X` at this offset (the flag says so), and it is dropped only
        // with the block.
        Some(unsafe { &*self.head.as_ptr().cast::<u8>().add(at).cast::<X>() })
    }

    /// The items.
    #[inline]
    pub fn items(&self) -> &[T] {
        let (extra, len) = self.shape();
        // The offset of an array does not depend on its length.
        let at = parts::<X, T>(extra, 0).items_at;
        // SAFETY: `new` wrote `len` items there, and they are dropped only with the block.
        unsafe { std::slice::from_raw_parts(self.head.as_ptr().cast::<u8>().add(at).cast::<T>(), len) }
    }

    /// Whether both are handles of one block.
    #[inline]
    pub fn ptr_eq(&self, other: &ThinBlock<X, T>) -> bool {
        self.head == other.head
    }

    /// The bytes the block asks of the allocator.
    pub fn block_size(&self) -> usize {
        let (extra, len) = self.shape();
        parts::<X, T>(extra, len).layout.size()
    }
}

impl<X, T> Clone for ThinBlock<X, T> {
    #[inline]
    fn clone(&self) -> ThinBlock<X, T> {
        // Relaxed, as in `Arc`: a new handle is made from an existing one, which keeps the
        // block alive, and passing it to another thread synchronises on its own.
        if self.head().count.fetch_add(1, Ordering::Relaxed) > MAX_COUNT {
            std::process::abort();
        }
        ThinBlock { head: self.head, _owns: PhantomData }
    }
}

impl<X, T> Drop for ThinBlock<X, T> {
    fn drop(&mut self) {
        // Release, then Acquire on the last one, as in `Arc`: every use of the block by other
        // handles happens before it is freed.
        if self.head().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        atomic::fence(Ordering::Acquire);
        let (extra, len) = self.shape();
        let p = parts::<X, T>(extra, len);
        let block = self.head.as_ptr().cast::<u8>();
        // SAFETY: this was the last handle, so nothing else reads the block. Its contents
        // are those `new` wrote at these offsets, dropped once here, and the block was
        // allocated with this layout.
        unsafe {
            if extra {
                ptr::drop_in_place(block.add(p.extra_at).cast::<X>());
            }
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(block.add(p.items_at).cast::<T>(), len));
            alloc::dealloc(block, p.layout);
        }
    }
}

impl<X: fmt::Debug, T: fmt::Debug> fmt::Debug for ThinBlock<X, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThinBlock").field("extra", &self.extra()).field("items", &self.items()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    /// Counts its drops.
    #[derive(Debug, Clone)]
    struct Tracked(Arc<AtomicUsize>, u64);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn holds_its_items_and_extra_and_drops_them_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let t = |v| Tracked(drops.clone(), v);
        let with = ThinBlock::new(Some((t(100), 7u32)), vec![t(1), t(2), t(3)]);
        let without: ThinBlock<(Tracked, u32), Tracked> = ThinBlock::new(None, vec![t(4)]);
        let empty: ThinBlock<(Tracked, u32), Tracked> = ThinBlock::new(None, Vec::new());
        assert_eq!(drops.load(Ordering::SeqCst), 0, "moved in, not dropped");
        assert_eq!(with.items().iter().map(|x| x.1).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(with.extra().map(|(x, n)| (x.1, *n)), Some((100, 7)));
        assert_eq!(without.items().iter().map(|x| x.1).collect::<Vec<_>>(), [4]);
        assert!(without.extra().is_none() && empty.extra().is_none() && empty.items().is_empty());
        let again = with.clone();
        assert!(again.ptr_eq(&with) && !again.ptr_eq(&without));
        drop(with);
        assert_eq!(drops.load(Ordering::SeqCst), 0, "a clone keeps the block");
        assert_eq!(again.items()[2].1, 3);
        drop(again);
        assert_eq!(drops.load(Ordering::SeqCst), 4, "the last handle drops the extra and the items");
        drop((without, empty));
        assert_eq!(drops.load(Ordering::SeqCst), 5);
    }

    /// The sizes the label sets were moved here for (see the module's header).
    #[test]
    fn a_block_is_its_header_and_its_parts() {
        assert_eq!(std::mem::size_of::<ThinBlock<(u64, u64), u64>>(), 8);
        assert_eq!(std::mem::size_of::<Option<ThinBlock<(u64, u64), u64>>>(), 8);
        let whole: ThinBlock<(u64, u64), u64> = ThinBlock::new(None, vec![0; 9]);
        assert_eq!(whole.block_size(), 8 + 9 * 8);
        let based = ThinBlock::new(Some((1u64, 2u64)), vec![0u64; 2]);
        assert_eq!(based.block_size(), 8 + 16 + 2 * 8);
        // Alignment: a 1-byte item after the head, a 16-aligned extra value.
        let bytes: ThinBlock<u128, u8> = ThinBlock::new(Some(5), vec![1, 2, 3]);
        assert_eq!((bytes.extra(), bytes.items()), (Some(&5), &[1u8, 2, 3][..]));
        assert_eq!(bytes.block_size(), 48);
    }

    #[test]
    fn handles_are_shared_across_threads() {
        let drops = Arc::new(AtomicUsize::new(0));
        let block = ThinBlock::new(
            Some(Tracked(drops.clone(), 0)),
            (1..=64).map(|v| Tracked(drops.clone(), v)).collect(),
        );
        std::thread::scope(|s| {
            for _ in 0..4 {
                let mine = block.clone();
                s.spawn(move || {
                    for _ in 0..10_000 {
                        let c = mine.clone();
                        assert_eq!(c.items().iter().map(|t| t.1).sum::<u64>(), 64 * 65 / 2);
                    }
                });
            }
        });
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(block);
        assert_eq!(drops.load(Ordering::SeqCst), 65);
    }
}
