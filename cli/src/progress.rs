//! Progress bars: drawn on stderr when it is a terminal, hidden otherwise, so logs and pipes
//! stay clean.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over a file's tensors, `verb` saying what is done to them ("converting", "merging").
pub fn tensor_bar(tty: bool, total: usize, verb: &str) -> ProgressBar {
    if !tty {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) = ProgressStyle::with_template(&format!("{{spinner}} {verb} [{{bar:40}}] {{pos}}/{{len}} tensors {{msg}} ({{elapsed}})")) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Ends a bar: cleared when the work succeeded, left standing (where it stopped) when it failed.
pub fn finish_bar(bar: Option<ProgressBar>, ok: bool) {
    match bar {
        Some(b) if ok => b.finish_and_clear(),
        Some(b) => b.abandon(),
        None => {}
    }
}
