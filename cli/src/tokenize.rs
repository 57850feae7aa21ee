//! `nexus-cli tokenize`: text in, token ids out, in the format of llama.cpp's `llama-tokenize`
//! (`id -> 'piece'` lines, or a Python-style list with `--ids`) so outputs diff directly.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::tokenizer::Tokenizer;

#[derive(Args)]
pub struct TokenizeArgs {
    /// GGUF file whose vocabulary to use (the weights are not loaded).
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// The text to tokenize.
    #[arg(short = 'p', long = "prompt", conflicts_with = "file")]
    prompt: Option<String>,
    /// Read the text from a file.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Print only the ids, as a list: [1, 2, 3].
    #[arg(long = "ids")]
    ids: bool,
    /// Treat special-token texts such as <|im_start|> as plain text.
    #[arg(long = "no-parse-special")]
    no_parse_special: bool,
    /// Do not add BOS even if the vocabulary asks for it.
    #[arg(long = "no-bos")]
    no_bos: bool,
    /// Take backslash sequences (\n, \t, …) literally; by default they are processed, as
    /// llama-tokenize does.
    #[arg(long = "no-escape")]
    no_escape: bool,
    /// Print the number of tokens at the end.
    #[arg(long = "show-count")]
    show_count: bool,
}

/// llama.cpp's `string_process_escapes`: \n \r \t \' \" \\ and \xHH; anything else is kept.
fn process_escapes(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let simple = match b[i + 1] {
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b't' => Some(b'\t'),
                b'\'' => Some(b'\''),
                b'"' => Some(b'"'),
                b'\\' => Some(b'\\'),
                _ => None,
            };
            if let Some(c) = simple {
                out.push(c);
                i += 2;
                continue;
            }
            if b[i + 1] == b'x' && i + 3 < b.len() {
                if let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("zz"), 16) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    // \xHH can produce invalid UTF-8; the tokenizer takes text, so such bytes become U+FFFD.
    String::from_utf8_lossy(&out).into_owned()
}

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let mut text = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("{}: reading the text", f.display()))?,
        (None, None) => bail!("give the text with -p TEXT or -f FILE"),
    };
    if !args.no_escape {
        text = process_escapes(&text);
    }
    let file = GgufFile::open(&args.model)?;
    let tokenizer = Tokenizer::from_gguf(&file).with_context(|| format!("{}: reading the tokenizer", args.model.display()))?;
    // llama-tokenize passes "add BOS" as llama_tokenize's add_special, so it also governs EOS.
    let ids = tokenizer.encode(&text, tokenizer.add_bos() && !args.no_bos, !args.no_parse_special);
    let mut out = std::io::stdout().lock();
    if args.ids {
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        writeln!(out, "[{}]", list.join(", "))?;
    } else {
        for &id in &ids {
            write!(out, "{id:6} -> '")?;
            out.write_all(&tokenizer.token_to_piece(id, true))?;
            writeln!(out, "'")?;
        }
    }
    if args.show_count {
        writeln!(out, "Total number of tokens: {}", ids.len())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::process_escapes;

    #[test]
    fn escapes_follow_llama_cpp() {
        assert_eq!(process_escapes(r"a\nb\tc\\d\'\x41\q"), "a\nb\tc\\d'A\\q");
        assert_eq!(process_escapes(r"end\"), "end\\");
    }
}
