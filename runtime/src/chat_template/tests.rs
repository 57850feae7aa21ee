//! Exact comparison against renderings by Python jinja2 set up like HF transformers
//! (tests/fixtures/chat_templates/expected.json, made by
//! scripts/gen_chat_template_fixtures.py).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
struct Fixtures {
    now_unix: i64,
    conversations: BTreeMap<String, Vec<Message>>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    template: String,
    bos_token: String,
    eos_token: String,
    conversation: String,
    add_generation_prompt: bool,
    expected: Option<String>,
    error: Option<String>,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chat_templates")
}

fn load() -> Fixtures {
    let path = fixtures_dir().join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("expected.json parses")
}

fn template_source(name: &str) -> String {
    std::fs::read_to_string(fixtures_dir().join(name)).expect("fixture template")
}

fn check(tmpl: &ChatTemplate, case: &Case, messages: &[Message], what: &str) -> Result<(), String> {
    let got = tmpl.render(messages, case.add_generation_prompt);
    let ctx = format!("{what} / {} / agp={}", case.conversation, case.add_generation_prompt);
    match (&case.expected, &case.error, got) {
        (Some(want), _, Ok(got)) if *want == got => Ok(()),
        (Some(want), _, Ok(got)) => Err(format!("{ctx}:\n  want {want:?}\n  got  {got:?}")),
        (_, Some(want), Err(ChatTemplateError::Rejected { message, .. })) if *want == message => Ok(()),
        (_, _, got) => Err(format!("{ctx}: want {:?} / error {:?}, got {got:?}", case.expected, case.error)),
    }
}

#[test]
fn real_templates_match_jinja2_exactly() {
    let fx = load();
    let mut failures = Vec::new();
    let mut templates = BTreeMap::new();
    for case in &fx.cases {
        let tmpl = templates.entry(case.template.clone()).or_insert_with(|| {
            ChatTemplate::from_jinja(&template_source(&case.template), &case.bos_token, &case.eos_token)
                .and_then(|t| t.with_fixed_time(fx.now_unix))
                .unwrap_or_else(|e| panic!("{}: {e}", case.template))
        });
        if let Err(e) = check(tmpl, case, &fx.conversations[&case.conversation], &case.template) {
            failures.push(e);
        }
    }
    assert!(templates.len() >= 8, "too few fixture templates");
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn builtins_match_the_real_templates() {
    let fx = load();
    // (builtin, fixture template, conversations it must match on). Qwen2.5 adds a
    // default system prompt when there is none, so it only matches chatml with one.
    let pairs: [(&str, &str, Option<&[&str]>); 6] = [
        ("chatml", "teknium-OpenHermes-2.5-Mistral-7B.jinja", None),
        ("chatml", "Qwen-Qwen2.5-7B-Instruct.jinja", Some(&["system_user", "multi_turn"])),
        ("llama3", "meta-llama-Meta-Llama-3-8B-Instruct.jinja", None),
        ("llama2", "meta-llama-Llama-2-7b-chat-hf.jinja", None),
        ("mistral", "mistralai-Mistral-7B-Instruct-v0.2.jinja", None),
        ("zephyr", "HuggingFaceH4-zephyr-7b-beta.jinja", None),
    ];
    let mut failures = Vec::new();
    for (name, file, only) in pairs {
        let mut n = 0;
        for case in fx.cases.iter().filter(|c| c.template == file) {
            if only.is_some_and(|o| !o.contains(&case.conversation.as_str())) {
                continue;
            }
            let tmpl = ChatTemplate::builtin(name, &case.bos_token, &case.eos_token).unwrap();
            assert_eq!(tmpl.family(), Some(name));
            if let Err(e) = check(&tmpl, case, &fx.conversations[&case.conversation], name) {
                failures.push(e);
            }
            n += 1;
        }
        assert!(n >= 4, "{name} vs {file}: only {n} cases");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn builtin_literal_formats() {
    let msgs = [Message::new("system", "Be brief."), Message::new("user", "Hi")];
    let chatml = ChatTemplate::builtin("chatml", "<s>", "<|im_end|>").unwrap();
    assert_eq!(
        chatml.render(&msgs, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert!(!chatml.renders_bos());
    let llama3 = ChatTemplate::builtin("LLAMA3", "<|begin_of_text|>", "<|eot_id|>").unwrap();
    assert_eq!(
        llama3.render(&msgs, true).unwrap(),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert!(llama3.renders_bos());
    let zephyr = ChatTemplate::builtin("zephyr", "<s>", "</s>").unwrap();
    assert_eq!(zephyr.render(&msgs, true).unwrap(), "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n");
    let mistral = ChatTemplate::builtin("mistral", "<s>", "</s>").unwrap();
    assert_eq!(mistral.render(&msgs, true).unwrap(), "<s> [INST] Be brief.\n\nHi [/INST]");
    let llama2 = ChatTemplate::builtin("llama2", "<s>", "</s>").unwrap();
    assert_eq!(llama2.render(&msgs, false).unwrap(), "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]");
}

#[test]
fn family_detection_on_real_templates() {
    let want = [
        ("Qwen-Qwen2.5-7B-Instruct.jinja", Some("chatml")),
        ("Qwen-Qwen3-0.6B.jinja", Some("chatml")),
        ("teknium-OpenHermes-2.5-Mistral-7B.jinja", Some("chatml")),
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", Some("llama3")),
        ("meta-llama-Llama-3.2-3B-Instruct.jinja", Some("llama3")),
        ("meta-llama-Meta-Llama-3-8B-Instruct.jinja", Some("llama3")),
        ("meta-llama-Llama-2-7b-chat-hf.jinja", Some("llama2")),
        ("mistralai-Mistral-7B-Instruct-v0.1.jinja", Some("mistral")),
        ("mistralai-Mistral-7B-Instruct-v0.2.jinja", Some("mistral")),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", Some("mistral")),
        ("HuggingFaceH4-zephyr-7b-beta.jinja", Some("zephyr")),
        ("microsoft-Phi-3.5-mini-instruct.jinja", Some("phi3")),
        ("google-gemma-2-2b-it.jinja", Some("gemma")),
        ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", Some("deepseek")),
    ];
    for (file, family) in want {
        let t = ChatTemplate::from_jinja(&template_source(file), "<s>", "</s>").unwrap();
        assert_eq!(t.family(), family, "{file}");
    }
    assert_eq!(detect_family("{{ messages }}"), None);
}

#[test]
fn unsupported_template_errors_name_family_and_builtins() {
    // Unknown filter: only found when rendering, which from_jinja's probe does.
    let err = ChatTemplate::from_jinja("{{ '<|im_start|>' }}{{ messages | frobnicate }}", "", "").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(&err, ChatTemplateError::Unsupported { family, .. } if family == "chatml"), "{err:?}");
    assert!(msg.contains("chatml") && msg.contains("frobnicate"), "{msg}");
    assert!(msg.contains("--chat-template"), "{msg}");
    for name in BUILTIN_NAMES {
        assert!(msg.contains(name), "{msg}");
    }

    // A statement this engine does not know.
    let err = ChatTemplate::from_jinja("{% for m in messages %}{% frobnicate %}{% endfor %}", "", "").unwrap_err();
    assert!(matches!(&err, ChatTemplateError::Unsupported { family, .. } if family == "unknown"), "{err:?}");
    assert!(err.to_string().contains("unknown"), "{err}");

    // Unclosed block.
    let err = ChatTemplate::from_jinja("[INST] {% for m in messages %}", "", "").unwrap_err();
    assert!(matches!(&err, ChatTemplateError::Unsupported { family, .. } if family == "mistral"), "{err:?}");
}

#[test]
fn raise_exception_is_a_rejection_not_unsupported() {
    let gemma = ChatTemplate::from_jinja(&template_source("google-gemma-2-2b-it.jinja"), "<bos>", "<eos>").unwrap();
    let err = gemma.render(&[Message::new("system", "x"), Message::new("user", "y")], true).unwrap_err();
    match &err {
        ChatTemplateError::Rejected { family, message } => {
            assert_eq!(family, "gemma");
            assert_eq!(message, "System role not supported");
        }
        other => panic!("{other:?}"),
    }
    // A template that always refuses still loads: the refusal is deliberate.
    let t = ChatTemplate::from_jinja("{{ raise_exception('needs a system message') }}", "", "").unwrap();
    assert!(t.render(&[], false).unwrap_err().to_string().contains("needs a system message"));
}

#[test]
fn resolve_follows_the_cli_rule() {
    let gguf = "{% for m in messages %}<|user|>{{ m.content }}{% endfor %}";
    // A builtin name wins over the GGUF template.
    assert_eq!(resolve(Some("llama3"), Some(gguf), "", "").unwrap().family(), Some("llama3"));
    // Jinja source in the flag.
    let t = resolve(Some("{{ messages[0].content }}!"), Some(gguf), "", "").unwrap();
    assert_eq!(t.render(&[Message::new("user", "hey")], false).unwrap(), "hey!");
    // No flag: the GGUF template.
    let t = resolve(None, Some(gguf), "", "").unwrap();
    assert_eq!(t.family(), Some("zephyr"));
    assert_eq!(t.render(&[Message::new("user", "a")], true).unwrap(), "<|user|>a");
    // Neither: an error that lists the builtins.
    for gguf in [None, Some(""), Some("  \n")] {
        let err = resolve(None, gguf, "", "").unwrap_err();
        assert!(matches!(err, ChatTemplateError::NoTemplate));
        let msg = err.to_string();
        assert!(msg.contains("no chat template") && msg.contains("--chat-template"), "{msg}");
        for name in BUILTIN_NAMES {
            assert!(msg.contains(name), "{msg}");
        }
    }
    let err = resolve(Some("vicuna"), None, "", "").unwrap_err();
    assert!(matches!(&err, ChatTemplateError::UnknownBuiltin { name } if name == "vicuna"));
    assert!(err.to_string().contains("chatml, llama3, llama2, mistral, zephyr"), "{err}");
}

#[test]
fn python_compat_helpers() {
    let render = |src: &str| {
        ChatTemplate::from_jinja(src, "<s>", "</s>")
            .and_then(|t| t.with_fixed_time(1_721_995_200))
            .and_then(|t| t.render(&[Message::new("user", "  Hi  ")], false))
            .unwrap()
    };
    // Booleans print in Python's spelling, as jinja2 prints them.
    assert_eq!(render("{{ messages[0].content.strip() }}|{{ messages[0].content.startswith('  H') }}"), "Hi|True");
    assert_eq!(render("{{ 'a,b'.split(',') | join('+') }}|{{ 'x'.upper() }}"), "a+b|X");
    assert_eq!(
        render("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%A %B %-d, %H:%M') }}"),
        "26 Jul 2024|Friday July 26, 12:00"
    );
    // HF's tojson: no HTML escaping, Python separators, indent.
    assert_eq!(
        render("{{ {'a': '<b> & \\'c\\'', 'n': [1, 2.5, none, true]} | tojson }}"),
        r#"{"a": "<b> & 'c'", "n": [1, 2.5, null, true]}"#
    );
    assert_eq!(render("{{ {'a': [1]} | tojson(indent=2) }}"), "{\n  \"a\": [\n    1\n  ]\n}");
    assert_eq!(render("{{ 'é' | tojson }}|{{ 'é' | tojson(ensure_ascii=true) }}"), "\"é\"|\"\\u00e9\"");
    assert_eq!(render("{{ bos_token }}{{ eos_token }}{{ add_generation_prompt }}"), "<s></s>False");
}

#[test]
fn generation_tags_and_undefined_length() {
    use super::pyfuncs::rewrite_generation_tags as rw;
    assert_eq!(rw("a{%- generation -%}b{% endgeneration %}c"), "a{%- if true -%}b{% endif %}c");
    assert_eq!(rw("{%+generation+%}{%generations%}{% generation"), "{%+if true+%}{%generations%}{% generation");
    let t = ChatTemplate::from_jinja(
        "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}\n{% endfor %}{{ tools|length }}",
        "",
        "",
    )
    .unwrap();
    // trim_blocks eats the newline after `{% endgeneration %}`, as it does after `{% endif %}`.
    assert_eq!(t.render(&[Message::new("user", "x")], false).unwrap(), "x0");
    assert_eq!(
        t.source(),
        "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}\n{% endfor %}{{ tools|length }}"
    );
}

#[test]
fn strftime_calendar() {
    use super::pyfuncs::strftime;
    assert_eq!(strftime(0, "%Y-%m-%d %H:%M:%S %a %j"), "1970-01-01 00:00:00 Thu 001");
    assert_eq!(strftime(1_709_164_800, "%d %b %Y %A %j"), "29 Feb 2024 Thursday 060");
    assert_eq!(strftime(1_735_689_599, "%F %T %y %I %p %%"), "2024-12-31 23:59:59 24 11 PM %");
    assert_eq!(strftime(-86_400, "%d %B %Y"), "31 December 1969");
}
