//! Rendering a chat template from an untrusted file in a child process with a memory limit.
//!
//! A template is a program, and the ones Nexus renders come from model files. The fuel bounds
//! how many instructions a render runs and [`MAX_RENDER_BYTES`](super::MAX_RENDER_BYTES) how
//! much it prints, but minijinja's string and list operations build values internally, so a few
//! dozen `{% set s = s ~ s %}` double a string past any memory (the `chat_template` fuzz
//! target's `memory-blowup` finding: 24 GB before the kernel killed the process). No in-process
//! limit covers every operation that can grow a value, so the limit is the operating system's:
//! a binary that calls [`install`] at start renders every template that is not a built-in in a
//! child process (itself, run with [`CHILD_ARG`]) whose address space is capped at
//! [`CHILD_ADDRESS_SPACE`] bytes and whose renders are cut off after a time limit. When the child
//! dies or times out, the render fails with [`ChatTemplateError::TooLarge`] and the next render
//! starts a fresh child; the parent and its conversation carry on.
//!
//! One child serves all renders of one [`ChatTemplate`](super::ChatTemplate) (a chat turn, or
//! thousands of training documents) over its stdin and stdout: a setup frame with the template,
//! then one request frame per render, each answered by one reply frame. Without [`install`]
//! (library users, tests) templates render in-process, bounded by the fuel and output limits only.

use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ChatTemplate, ChatTemplateError, Message, MAX_RENDER_BYTES, RENDER_STACK};

/// The argument that makes a binary which called [`install`] serve renders (see
/// [`serve_process`]); it is not meant to be typed by users.
pub const CHILD_ARG: &str = "__render-chat-template";

/// The child's address-space limit: the 256 MiB render stack, the binary and its allocator
/// arenas, and about 1.5 GiB for values. Real templates need a few MiB.
pub const CHILD_ADDRESS_SPACE: u64 = 2 << 30;

/// How long one render may take in the child: the definition of a hang. Real
/// templates take milliseconds even over a full context of turns; the fuel stops loops, but
/// not a few thousand instructions that each copy a string of hundreds of MiB (fuzzing found
/// templates that render for 0.5–1 s within the fuel).
pub const RENDER_TIMEOUT: Duration = Duration::from_secs(1);

/// Requests are the parent's own data (the conversation), but a length prefix read from a
/// broken stream must not turn into a huge allocation.
const MAX_FRAME: u64 = 1 << 30;

/// How to start the child: a program and its arguments (typically the running binary and
/// [`CHILD_ARG`]).
#[derive(Debug, Clone)]
pub struct ChildCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Per-render time limit sent to the child; [`RENDER_TIMEOUT`] unless a test shortens it.
    pub timeout: Duration,
}

impl ChildCommand {
    /// The running executable with [`CHILD_ARG`]: the usual choice for a binary whose `main`
    /// hands that argument to [`serve_process`].
    pub fn current_exe() -> io::Result<Self> {
        Ok(Self { program: std::env::current_exe()?, args: vec![CHILD_ARG.to_string()], timeout: RENDER_TIMEOUT })
    }
}

static INSTALLED: OnceLock<ChildCommand> = OnceLock::new();

/// From now on, templates that are not built-ins render in a child started by `command`. Call
/// it once, early in `main`; a second call is ignored (the first command stays).
pub fn install(command: ChildCommand) {
    let _ = INSTALLED.set(command);
}

pub(super) fn installed() -> Option<&'static ChildCommand> {
    INSTALLED.get()
}

/// The child's `main`: caps its own address space, then answers requests from stdin on
/// stdout until stdin closes. Returns the process exit code.
pub fn serve_process() -> i32 {
    if let Err(e) = limit_address_space(CHILD_ADDRESS_SPACE) {
        eprintln!("chat template renderer: cannot limit its memory: {e}");
        return 2;
    }
    match serve(io::stdin().lock(), io::stdout().lock()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("chat template renderer: {e}");
            1
        }
    }
}

#[cfg(unix)]
fn limit_address_space(bytes: u64) -> io::Result<()> {
    let limit = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
    // SAFETY: setrlimit reads the struct we pass and touches no memory of ours.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Elsewhere there is no `setrlimit`; the child still keeps a runaway render out of the parent
/// and stops it after the time limit.
#[cfg(not(unix))]
fn limit_address_space(_bytes: u64) -> io::Result<()> {
    Ok(())
}

// ---- The protocol -------------------------------------------------------------------------
// Frame: one tag byte, a u64 little-endian length, that many bytes. Parent to child: SETUP
// (JSON `Setup`), then RENDER frames (JSON `Request`). Child to parent: READY or EXITING after
// the setup; per request TEXT (the rendered UTF-8), FAILED (JSON `Failure`, child goes on) or
// EXITING (JSON `Failure`, the child stops: a render it could not stop is still running).

const SETUP: u8 = b'S';
const RENDER: u8 = b'R';
const READY: u8 = b'r';
const TEXT: u8 = b'T';
const FAILED: u8 = b'F';
const EXITING: u8 = b'X';

#[derive(Serialize, Deserialize)]
struct Setup {
    source: String,
    bos_token: String,
    eos_token: String,
    fixed_now: Option<i64>,
    timeout_ms: u64,
}

#[derive(Serialize)]
struct RequestRef<'a> {
    messages: &'a [Message],
    add_generation_prompt: bool,
}

#[derive(Deserialize)]
struct Request {
    messages: Vec<Message>,
    add_generation_prompt: bool,
}

/// The errors a render can end with, as they cross the pipe.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Failure {
    Unsupported { family: String, reason: String },
    Rejected { family: String, message: String },
    TooLarge { family: String, limit: String },
}

impl From<ChatTemplateError> for Failure {
    fn from(e: ChatTemplateError) -> Self {
        match e {
            ChatTemplateError::Rejected { family, message } => Failure::Rejected { family, message },
            ChatTemplateError::TooLarge { family, limit } => Failure::TooLarge { family, limit },
            ChatTemplateError::Unsupported { family, reason } => Failure::Unsupported { family, reason },
            other => Failure::Unsupported { family: "unknown".into(), reason: other.to_string() },
        }
    }
}

impl From<Failure> for ChatTemplateError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unsupported { family, reason } => ChatTemplateError::Unsupported { family, reason },
            Failure::Rejected { family, message } => ChatTemplateError::Rejected { family, message },
            Failure::TooLarge { family, limit } => ChatTemplateError::TooLarge { family, limit },
        }
    }
}

fn write_frame(w: &mut impl Write, tag: u8, body: &[u8]) -> io::Result<()> {
    w.write_all(&[tag])?;
    w.write_all(&(body.len() as u64).to_le_bytes())?;
    w.write_all(body)?;
    w.flush()
}

/// The next frame, or `None` when the stream ends cleanly before one starts.
fn read_frame(r: &mut impl Read, max: u64) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut tag = [0u8; 1];
    if r.read(&mut tag)? == 0 {
        return Ok(None);
    }
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of {len} bytes (limit {max})")));
    }
    let mut body = Vec::with_capacity(len as usize);
    r.take(len).read_to_end(&mut body)?;
    if body.len() as u64 != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some((tag[0], body)))
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain structs serialize")
}

fn bad_data(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// The child's loop over any pair of streams (a test can drive it in memory).
pub fn serve(mut input: impl Read, mut output: impl Write) -> io::Result<()> {
    let Some((SETUP, body)) = read_frame(&mut input, MAX_FRAME)? else {
        return Err(bad_data("the first frame is not the template setup"));
    };
    let setup: Setup = serde_json::from_slice(&body).map_err(bad_data)?;
    let timeout = Duration::from_millis(setup.timeout_ms);
    // Only templates that are not built-ins come here (`ChatTemplate::render`), so the family
    // is detected from the source as the parent detected it.
    let tmpl = match ChatTemplate::build(setup.source, &setup.bos_token, &setup.eos_token, None, setup.fixed_now) {
        Ok(t) => Arc::new(t),
        Err(e) => return write_frame(&mut output, EXITING, &json(&Failure::from(e))),
    };
    write_frame(&mut output, READY, &[])?;
    while let Some((tag, body)) = read_frame(&mut input, MAX_FRAME)? {
        if tag != RENDER {
            return Err(bad_data(format!("unexpected frame {:?}", tag as char)));
        }
        let request: Request = serde_json::from_slice(&body).map_err(bad_data)?;
        let (done, result) = mpsc::channel();
        let render = Arc::clone(&tmpl);
        std::thread::Builder::new()
            .name("chat-template".into())
            .stack_size(RENDER_STACK)
            .spawn(move || {
                let _ = done.send(render.render_here(&request.messages, request.add_generation_prompt));
            })?;
        let family = || tmpl.family.unwrap_or("unknown").to_string();
        match result.recv_timeout(timeout) {
            Ok(Ok(text)) => write_frame(&mut output, TEXT, text.as_bytes())?,
            Ok(Err(e)) => write_frame(&mut output, FAILED, &json(&Failure::from(e)))?,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let limit = format!("rendering took longer than {} ms", timeout.as_millis());
                // The render thread cannot be stopped; the process ends with it still running.
                return write_frame(&mut output, EXITING, &json(&Failure::TooLarge { family: family(), limit }));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let reason = "the renderer panicked (a bug in the template engine)".to_string();
                return write_frame(&mut output, EXITING, &json(&Failure::Unsupported { family: family(), reason }));
            }
        }
    }
    Ok(())
}

// ---- The parent's side ----------------------------------------------------------------------

/// The child of one template, started at its first render and restarted after it dies.
#[derive(Default)]
pub(super) struct ChildSlot(Mutex<Option<Renderer>>);

impl ChildSlot {
    pub(super) fn render(
        &self,
        command: &ChildCommand,
        tmpl: &ChatTemplate,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // A child that ended since the last render (killed from outside) is replaced before
        // anything is written to it.
        if slot.as_mut().is_some_and(|r| !matches!(r.child.try_wait(), Ok(None))) {
            slot.take();
        }
        let renderer = match slot.as_mut() {
            Some(r) => r,
            None => slot.insert(Renderer::start(command, tmpl)?),
        };
        let request = json(&RequestRef { messages, add_generation_prompt });
        match renderer.exchange(&request) {
            Ok((TEXT, text)) => String::from_utf8(text).map_err(|e| broken(command, &e.to_string())),
            Ok((FAILED, failure)) => Err(parse_failure(command, &failure)),
            Ok((EXITING, failure)) => {
                slot.take();
                Err(parse_failure(command, &failure))
            }
            Ok((tag, _)) => Err(broken(command, &format!("unexpected reply {:?}", tag as char))),
            Err(_) => {
                let dead = slot.take().expect("the renderer was just used");
                Err(dead.death(command, tmpl.family.unwrap_or("unknown")))
            }
        }
    }
}

pub(super) struct Renderer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Renderer {
    fn start(command: &ChildCommand, tmpl: &ChatTemplate) -> Result<Self, ChatTemplateError> {
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| broken(command, &format!("cannot start it: {e}")))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut renderer = Renderer { child, stdin, stdout };
        let setup = Setup {
            source: tmpl.source.clone(),
            bos_token: tmpl.bos_token.clone(),
            eos_token: tmpl.eos_token.clone(),
            fixed_now: tmpl.fixed_now,
            timeout_ms: command.timeout.as_millis() as u64,
        };
        // Nothing is written after the setup until the child says it is ready, so a child that
        // failed to start is noticed by reading, never by writing into a closed pipe (which
        // would raise SIGPIPE in a binary that restored its default action).
        let ready = write_frame(&mut renderer.stdin, SETUP, &json(&setup))
            .and_then(|()| read_frame(&mut renderer.stdout, MAX_FRAME));
        match ready {
            Ok(Some((READY, _))) => Ok(renderer),
            Ok(Some((EXITING, failure))) => Err(parse_failure(command, &failure)),
            Ok(_) | Err(_) => Err(renderer.death(command, tmpl.family.unwrap_or("unknown"))),
        }
    }

    fn exchange(&mut self, request: &[u8]) -> io::Result<(u8, Vec<u8>)> {
        write_frame(&mut self.stdin, RENDER, request)?;
        // The rendered text is at most MAX_RENDER_BYTES; failures are short JSON.
        read_frame(&mut self.stdout, MAX_RENDER_BYTES as u64 + 4096)?.ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
    }

    /// The error for a child that stopped answering: waits for it and reads what it printed.
    fn death(mut self, command: &ChildCommand, family: &str) -> ChatTemplateError {
        let _ = self.child.kill();
        let status = self.child.wait();
        let mut stderr = String::new();
        if let Some(pipe) = self.child.stderr.take() {
            let _ = pipe.take(64 << 10).read_to_string(&mut stderr);
        }
        // Rust's own words for the two ways a render runs out of memory (a backtrace may follow).
        let out_of_memory = stderr.lines().find(|l| l.contains("memory allocation of") || l.contains("overflowed its stack"));
        let said = out_of_memory.or_else(|| stderr.lines().find(|l| !l.trim().is_empty())).unwrap_or("").trim().to_string();
        if out_of_memory.is_some() {
            let limit = format!(
                "rendering needed more memory than the renderer's {} MiB address space ({said})",
                CHILD_ADDRESS_SPACE >> 20
            );
            return ChatTemplateError::TooLarge { family: family.to_string(), limit };
        }
        let status = status.map(|s| describe(&s)).unwrap_or_else(|e| e.to_string());
        broken(command, &if said.is_empty() { status } else { format!("{status}: {said}") })
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn describe(status: &ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    status.to_string()
}

fn broken(command: &ChildCommand, reason: &str) -> ChatTemplateError {
    ChatTemplateError::Renderer { program: command.program.display().to_string(), reason: reason.to_string() }
}

fn parse_failure(command: &ChildCommand, body: &[u8]) -> ChatTemplateError {
    match serde_json::from_slice::<Failure>(body) {
        Ok(f) => f.into(),
        Err(e) => broken(command, &format!("an unreadable reply: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(setup: &Setup, requests: &[(&[Message], bool)]) -> Vec<u8> {
        let mut input = Vec::new();
        write_frame(&mut input, SETUP, &json(setup)).unwrap();
        for (messages, agp) in requests {
            write_frame(&mut input, RENDER, &json(&RequestRef { messages, add_generation_prompt: *agp })).unwrap();
        }
        input
    }

    fn replies(mut output: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut all = Vec::new();
        while let Some(frame) = read_frame(&mut output, MAX_FRAME).unwrap() {
            all.push(frame);
        }
        all
    }

    fn setup(source: &str, timeout_ms: u64) -> Setup {
        Setup {
            source: source.into(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
            fixed_now: Some(1_700_000_000),
            timeout_ms,
        }
    }

    #[test]
    fn the_child_loop_renders_what_the_template_renders_in_process() {
        let source = super::super::builtins::source("chatml").unwrap().1;
        let tmpl = ChatTemplate::build(source.into(), "<s>", "</s>", None, Some(1_700_000_000)).unwrap();
        let one = [Message::new("user", "Hello")];
        let two = [Message::new("system", "Be brief."), Message::new("user", "2+2?")];
        let mut output = Vec::new();
        serve(&frames(&setup(source, 10_000), &[(&one, true), (&two, false)])[..], &mut output).unwrap();
        let got = replies(&output);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, READY);
        assert_eq!((got[1].0, String::from_utf8(got[1].1.clone()).unwrap()), (TEXT, tmpl.render_here(&one, true).unwrap()));
        assert_eq!((got[2].0, String::from_utf8(got[2].1.clone()).unwrap()), (TEXT, tmpl.render_here(&two, false).unwrap()));
    }

    #[test]
    fn failures_cross_the_pipe_as_the_same_errors() {
        let source = "{% if messages[0].role != 'system' %}{{ raise_exception('needs a system message') }}{% endif %}ok";
        let mut output = Vec::new();
        let user = [Message::new("user", "hi")];
        let system = [Message::new("system", "hi")];
        serve(&frames(&setup(source, 10_000), &[(&user, true), (&system, true)])[..], &mut output).unwrap();
        let got = replies(&output);
        assert_eq!(got[1].0, FAILED);
        match ChatTemplateError::from(serde_json::from_slice::<Failure>(&got[1].1).unwrap()) {
            ChatTemplateError::Rejected { message, .. } => assert_eq!(message, "needs a system message"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!((got[2].0, &got[2].1[..]), (TEXT, &b"ok"[..]), "the child goes on after a failed render");
    }

    #[test]
    fn a_render_past_its_time_limit_ends_the_child_with_a_limit_error() {
        // Forty copies of a 32 MiB string: within the fuel, well past 20 ms (and over within a
        // second, since the abandoned render thread here runs on in the test process).
        let source = "{% set ns = namespace(s='x') %}{% for i in range(25) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}\
                      {% for i in range(40) %}{% set y = ns.s ~ 'a' %}{% endfor %}done";
        let mut output = Vec::new();
        let user = [Message::new("user", "hi")];
        serve(&frames(&setup(source, 20), &[(&user, true), (&user, true)])[..], &mut output).unwrap();
        let got = replies(&output);
        assert_eq!(got.len(), 2, "the child stops after the timed-out render and reads nothing more");
        assert_eq!(got[1].0, EXITING);
        match ChatTemplateError::from(serde_json::from_slice::<Failure>(&got[1].1).unwrap()) {
            ChatTemplateError::TooLarge { limit, .. } => assert_eq!(limit, "rendering took longer than 20 ms"),
            other => panic!("expected a time limit, got {other:?}"),
        }
    }

    #[test]
    fn a_template_that_does_not_compile_is_refused_at_setup() {
        let mut output = Vec::new();
        serve(&frames(&setup("{% for %}", 10_000), &[])[..], &mut output).unwrap();
        let got = replies(&output);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, EXITING);
        assert!(matches!(
            ChatTemplateError::from(serde_json::from_slice::<Failure>(&got[0].1).unwrap()),
            ChatTemplateError::Unsupported { .. }
        ));
    }

    #[test]
    fn a_truncated_or_oversized_frame_is_an_error_not_an_allocation() {
        let mut buf = Vec::new();
        write_frame(&mut buf, RENDER, b"12345").unwrap();
        assert!(read_frame(&mut &buf[..buf.len() - 1], MAX_FRAME).is_err());
        let mut huge = vec![RENDER];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(read_frame(&mut &huge[..], MAX_FRAME).is_err());
        assert!(read_frame(&mut &[][..], MAX_FRAME).unwrap().is_none());
    }
}
