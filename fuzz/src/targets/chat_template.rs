//! The chat-template renderer on arbitrary Jinja sources and conversations.
//!
//! Input layout: one flag byte (bit 0: add_generation_prompt), the template source up to
//! the first NUL, then `role NUL content NUL ...` message pairs.

use nexus_runtime::chat_template::{ChatTemplate, Message};

pub fn run(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut parts = rest.split(|&b| b == 0).map(|p| String::from_utf8_lossy(p).into_owned());
    let Some(source) = parts.next() else { return };
    let parts: Vec<String> = parts.collect();
    let messages: Vec<Message> = parts.chunks(2).map(|p| Message::new(p[0].clone(), p.get(1).cloned().unwrap_or_default())).collect();
    let Ok(tmpl) = ChatTemplate::from_jinja(&source, "<s>", "</s>") else { return };
    let Ok(tmpl) = tmpl.with_fixed_time(1_700_000_000) else { return };
    let _ = tmpl.render(&messages, flags & 1 != 0);
}
