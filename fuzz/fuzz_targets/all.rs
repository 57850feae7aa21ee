//! Every target in one binary, chosen by NEXUS_FUZZ_TARGET (read once; a missing or unknown
//! name exits with the list), so one file can be carried to a machine without a Rust toolchain
//! (scripts/fuzz_pack.sh, scripts/fuzz_device.sh). The chosen target's one-time loading runs
//! in libFuzzer's initialization, as in its own binary.
//!
//! Built without a sanitizer there, libFuzzer's `-malloc_limit_mb` has no malloc hook to work
//! with, so this binary's allocator refuses any single allocation over 1 GiB itself (the limit
//! scripts/fuzz.sh sets): it prints the size and aborts, which libFuzzer reports as a crash
//! and keeps the input.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};

const MALLOC_LIMIT: usize = 1 << 30;

struct Limited;

#[cold]
fn over_limit(size: usize) -> ! {
    // Formatting an integer to stderr does not allocate.
    eprintln!("==nexus-fuzz== ERROR: one allocation of {size} bytes, over the 1 GiB limit");
    std::process::abort()
}

// SAFETY: every call is passed to the system allocator unchanged, after the size check.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MALLOC_LIMIT {
            over_limit(layout.size());
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MALLOC_LIMIT {
            over_limit(layout.size());
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MALLOC_LIMIT {
            over_limit(new_size);
        }
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Limited = Limited;

libfuzzer_sys::fuzz_target!(init: (nexus_fuzz::targets::selected().init)(), |data: &[u8]| (nexus_fuzz::targets::selected().run)(data));
