//! NVRTC compilation of the kernel sources for the device's architecture, cached on disk.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::sys;

use super::CudaError;

/// The CUDA C sources, in dependency order.
const SOURCES: [&str; 6] = [
    include_str!("cu/common.cuh"),
    include_str!("cu/matvec.cu"),
    include_str!("cu/ops.cu"),
    include_str!("cu/prefill.cu"),
    include_str!("cu/train.cu"),
    include_str!("cu/train_attn.cu"),
];

pub fn source() -> String {
    // Measuring switches (docs/CUDA.md), each a define ahead of the sources; the cache key
    // covers the whole source. NEXUS_CUDA_F16_PASS=4: the F16/BF16 mat-vec takes four items per
    // row per pass instead of two. NEXUS_CUDA_MV_MINB=N (1..=8): mat-vec registers capped so N
    // blocks of 256 threads fit an SM.
    let mut src = String::new();
    if std::env::var("NEXUS_CUDA_F16_PASS").is_ok_and(|v| v == "4") {
        src.push_str("#define NEXUS_F16_PASS4 1\n");
    }
    if let Some(n) = std::env::var("NEXUS_CUDA_MV_MINB").ok().and_then(|v| v.parse::<u32>().ok()).filter(|n| (1..=8).contains(n)) {
        src.push_str(&format!("#define NEXUS_MV_MINB {n}\n"));
    }
    src.push_str(&SOURCES.join("\n"));
    src
}

/// A CUBIN for `arch` (e.g. `sm_90`): from the cache when the same source was compiled by the
/// same NVRTC before, else compiled now and stored.
pub fn cubin(arch: &str) -> Result<Vec<u8>, CudaError> {
    let src = source();
    let version = nvrtc_version()?;
    let key = fnv1a(format!("{src}\0{arch}\0{version:?}").as_bytes());
    let cache = cache_dir().map(|d| d.join(format!("nexus-{key:016x}-{arch}.cubin")));
    if let Some(bytes) = cache.as_ref().and_then(|p| std::fs::read(p).ok()) {
        return Ok(bytes);
    }
    let include = include_dir()?;
    let bytes = compile(&src, arch, &include)?;
    if let Some(path) = cache {
        // A failed cache write only costs a recompilation next time.
        let _ = write_atomic(&path, &bytes);
    }
    Ok(bytes)
}

fn compile(src: &str, arch: &str, include: &Path) -> Result<Vec<u8>, CudaError> {
    let fail = |log: String| CudaError::Compile { arch: arch.to_string(), log };
    let c_src = CString::new(src).map_err(|_| fail("source holds a NUL byte".into()))?;
    let opts: Vec<CString> = [
        format!("--gpu-architecture={arch}"),
        format!("--include-path={}", include.display()),
        "--std=c++17".to_string(),
        "-default-device".to_string(),
    ]
    .into_iter()
    .map(|o| CString::new(o).expect("options hold no NUL"))
    .collect();
    let ptrs: Vec<*const std::ffi::c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    unsafe {
        let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
        check(sys::nvrtcCreateProgram(&mut prog, c_src.as_ptr(), c"nexus.cu".as_ptr(), 0, std::ptr::null(), std::ptr::null()))
            .map_err(|e| fail(format!("nvrtcCreateProgram: {e}")))?;
        let rc = sys::nvrtcCompileProgram(prog, ptrs.len() as i32, ptrs.as_ptr());
        let result = if rc != sys::nvrtcResult::NVRTC_SUCCESS {
            Err(fail(program_log(prog)))
        } else {
            let mut size = 0usize;
            check(sys::nvrtcGetCUBINSize(prog, &mut size)).map_err(|e| fail(format!("nvrtcGetCUBINSize: {e}")))?;
            let mut buf = vec![0u8; size];
            check(sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast())).map_err(|e| fail(format!("nvrtcGetCUBIN: {e}")))?;
            Ok(buf)
        };
        sys::nvrtcDestroyProgram(&mut prog);
        result
    }
}

unsafe fn program_log(prog: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    if sys::nvrtcGetProgramLogSize(prog, &mut size) != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
        return "(no log)".into();
    }
    let mut buf = vec![0 as std::ffi::c_char; size];
    sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr());
    CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
}

fn check(rc: sys::nvrtcResult) -> Result<(), String> {
    if rc == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(format!("{rc:?}"))
    }
}

fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    let (mut major, mut minor) = (0, 0);
    unsafe { check(sys::nvrtcVersion(&mut major, &mut minor)) }
        .map_err(|e| CudaError::Compile { arch: String::new(), log: format!("nvrtcVersion: {e}") })?;
    Ok((major, minor))
}

/// The toolkit's `include` folder, which holds cuda_fp16.h for NVRTC.
fn include_dir() -> Result<PathBuf, CudaError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    for var in ["CUDA_PATH", "CUDA_HOME", "CUDA_ROOT"] {
        if let Some(p) = std::env::var_os(var) {
            candidates.push(PathBuf::from(p).join("include"));
        }
    }
    candidates.push("/usr/local/cuda/include".into());
    candidates.push("/usr/include".into());
    candidates
        .iter()
        .find(|d| d.join("cuda_fp16.h").is_file())
        .cloned()
        .ok_or_else(|| CudaError::Headers {
            searched: candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", "),
        })
}

fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("NEXUS_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("nexus")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/nexus")))?;
    let dir = base.join("cuda");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// FNV-1a, 64 bit: a stable hash for the cache key (std's hasher may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    /// Compiles the sources for Hopper without a GPU (NVRTC only needs its library and the
    /// headers); skipped where NVRTC is absent.
    #[test]
    fn sources_compile_for_sm90() {
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("skipped: NVRTC not found");
            return;
        }
        if let Err(e) = super::include_dir() {
            eprintln!("skipped: {e}");
            return;
        }
        let src = super::source();
        let cubin = super::compile(&src, "sm_90", &super::include_dir().unwrap()).unwrap_or_else(|e| panic!("{e}"));
        assert!(cubin.starts_with(b"\x7fELF"), "NVRTC output is not an ELF cubin");
        // Opening a GPU looks up every kernel by name: a name the sources lost would fail
        // every open, which only a GPU machine would see otherwise.
        for name in super::super::device::KERNELS {
            let symbol = [name.as_bytes(), b"\0"].concat();
            assert!(cubin.windows(symbol.len()).any(|w| w == symbol), "the CUBIN has no kernel {name}");
        }
    }
}
