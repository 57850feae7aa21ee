//! The espeak-ng calls (through `espeakng-sys`, linking the system libespeak-ng).
//!
//! espeak-ng keeps one global engine per process and is not thread-safe, so it is initialised
//! once and every call goes through one lock, which also remembers the selected voice.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use espeakng_sys as sys;

use super::TtsError;

struct Engine {
    voice: Option<String>,
}

static ENGINE: OnceLock<Result<Mutex<Engine>, String>> = OnceLock::new();

fn engine() -> Result<MutexGuard<'static, Engine>, TtsError> {
    match ENGINE.get_or_init(|| initialize().map(|()| Mutex::new(Engine { voice: None }))) {
        // Every call leaves the engine consistent, so a panic elsewhere while holding the lock
        // does not make it unusable.
        Ok(engine) => Ok(engine.lock().unwrap_or_else(PoisonError::into_inner)),
        Err(why) => Err(TtsError::Phonemizer(why.clone())),
    }
}

fn initialize() -> Result<(), String> {
    // DONT_EXIT: without it espeak-ng calls exit(1) when its data is missing.
    let options = sys::espeakINITIALIZE_DONT_EXIT as c_int;
    // SAFETY: a null path selects espeak-ng's default data folder (or $ESPEAK_DATA_PATH);
    // synchronous mode opens no audio device. Runs once, inside the OnceLock.
    let rate = unsafe {
        sys::espeak_Initialize(sys::espeak_AUDIO_OUTPUT_AUDIO_OUTPUT_SYNCHRONOUS, 0, std::ptr::null(), options)
    };
    if rate <= 0 {
        return Err(format!(
            "espeak-ng could not initialise (espeak_Initialize returned {rate}): its data folder \
             espeak-ng-data is missing or incomplete; install espeak-ng-data, or set \
             ESPEAK_DATA_PATH to the folder that contains espeak-ng-data"
        ));
    }
    Ok(())
}

fn select_voice(engine: &mut Engine, voice: &str) -> Result<(), TtsError> {
    if engine.voice.as_deref() == Some(voice) {
        return Ok(());
    }
    let name = CString::new(voice)
        .map_err(|_| TtsError::Phonemizer(format!("espeak voice name {voice:?} contains a NUL character")))?;
    engine.voice = None;
    // SAFETY: engine initialised (we hold its lock); `name` is a valid C string for the call.
    let status = unsafe { sys::espeak_SetVoiceByName(name.as_ptr()) };
    if status != sys::espeak_ERROR_EE_OK {
        return Err(TtsError::Phonemizer(format!(
            "espeak-ng has no voice {voice:?} (espeak_SetVoiceByName returned {status}; \
             `espeak-ng --voices` lists the installed ones)"
        )));
    }
    engine.voice = Some(voice.to_string());
    Ok(())
}

/// espeak-ng recurses deeply on some inputs: the test suite overflowed a 2 MiB thread stack
/// (Rust's default for spawned threads, and so for rayon workers and test threads) about one
/// run in four, and never with 4 MiB. Every call into it therefore runs on a thread of its own
/// with this much stack (a thread start costs tens of microseconds, nothing next to espeak).
const ESPEAK_STACK: usize = 16 << 20;

fn on_espeak_stack<T: Send>(f: impl FnOnce() -> Result<T, TtsError> + Send) -> Result<T, TtsError> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("espeak-ng".into())
            .stack_size(ESPEAK_STACK)
            .spawn_scoped(scope, f)
            .map_err(|e| TtsError::Phonemizer(format!("cannot start the espeak-ng thread: {e}")))?;
        worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Initialises espeak-ng if needed and selects `voice`, so a bad voice fails early.
pub(super) fn check_voice(voice: &str) -> Result<(), TtsError> {
    on_espeak_stack(|| select_voice(&mut *engine()?, voice))
}

pub(super) fn version() -> Result<String, TtsError> {
    on_espeak_stack(version_here)
}

fn version_here() -> Result<String, TtsError> {
    let _engine = engine()?;
    let mut data_path: *const c_char = std::ptr::null();
    // SAFETY: espeak_Info returns a pointer to a static NUL-terminated string.
    let v = unsafe { sys::espeak_Info(&mut data_path) };
    if v.is_null() {
        return Err(TtsError::Phonemizer("espeak_Info returned no version".into()));
    }
    // SAFETY: non-null, NUL-terminated, static.
    Ok(unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned())
}

/// Runs `espeak_TextToPhonemes` (IPA) over `text` clause by clause, calling
/// `each(ipa, consumed_text, at_end)` for every clause. `text` must not contain NUL.
pub(super) fn clauses(voice: &str, text: &str, mut each: impl FnMut(&str, &str, bool)) -> Result<(), TtsError> {
    // (ipa, consumed text, at end) per clause, gathered on the big-stack thread.
    let found = on_espeak_stack(|| {
        let mut found = Vec::new();
        clauses_here(voice, text, |ipa, consumed, at_end| found.push((ipa.to_string(), consumed.len(), at_end)))?;
        Ok(found)
    })?;
    let mut start = 0;
    for (ipa, len, at_end) in found {
        each(&ipa, &text[start..start + len], at_end);
        start += len;
    }
    Ok(())
}

fn clauses_here(voice: &str, text: &str, mut each: impl FnMut(&str, &str, bool)) -> Result<(), TtsError> {
    let mut engine = engine()?;
    // Selected afresh for every text, as Piper does: espeak-ng switches its translator by
    // itself on text in other scripts, and that switch can outlive the call, so a voice
    // remembered as selected gave another language's phonemes (seen in the test suite).
    engine.voice = None;
    select_voice(&mut engine, voice)?;
    let c_text = CString::new(text)
        .map_err(|e| TtsError::Phonemizer(format!("text contains a NUL character at byte {}", e.nul_position())))?;
    let bytes = text.as_bytes();
    let base = c_text.as_ptr() as usize;
    let mut ptr = c_text.as_ptr() as *const c_void;
    let mode = sys::espeakCHARS_AUTO as c_int;
    let phonemes = sys::espeakPHONEMES_IPA as c_int;
    while !ptr.is_null() {
        let start = ptr as usize - base;
        // SAFETY: `ptr` points into `c_text` (NUL-terminated, alive for the loop); espeak
        // advances it within the string or sets it to NULL. We hold the engine lock.
        let ipa = unsafe { sys::espeak_TextToPhonemes(&mut ptr, mode, phonemes) };
        let at_end = ptr.is_null();
        let end = if at_end { bytes.len() } else { (ptr as usize).wrapping_sub(base) };
        if end > bytes.len() || (!at_end && end <= start) {
            return Err(TtsError::Phonemizer(format!(
                "espeak_TextToPhonemes moved from byte {start} to {end} of a {}-byte text",
                bytes.len()
            )));
        }
        let consumed = std::str::from_utf8(&bytes[start..end]).map_err(|_| {
            TtsError::Phonemizer(format!("espeak_TextToPhonemes stopped inside a UTF-8 character at byte {end}"))
        })?;
        // SAFETY: espeak returns NULL or a NUL-terminated string in its own buffer, valid
        // until the next call; it is copied out before then.
        let ipa = if ipa.is_null() { Default::default() } else { unsafe { CStr::from_ptr(ipa as *const c_char) }.to_string_lossy() };
        each(&ipa, consumed, at_end);
    }
    Ok(())
}
