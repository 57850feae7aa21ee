//! Built-in chat templates for `--chat-template NAME`.
//!
//! Each is the verbatim `chat_template` of a real model's `tokenizer_config.json`
//! (JSON-decoded), rendered by the same engine as GGUF templates, so a builtin
//! produces byte-for-byte what that model's own template produces. The fixture
//! tests check each against the rendering by Python jinja2.

/// Names accepted by [`super::ChatTemplate::builtin`], in the order shown to users.
pub const BUILTIN_NAMES: &[&str] = &["chatml", "llama3", "llama2", "mistral", "zephyr"];

/// teknium/OpenHermes-2.5-Mistral-7B; the same turns as Qwen2/2.5 when the
/// conversation has a system message (Qwen adds a default one when it has none).
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// meta-llama/Meta-Llama-3-8B-Instruct. Llama 3.1+ templates additionally put a
/// "Cutting Knowledge Date" header into the system turn; use the GGUF's own
/// template for those.
const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// meta-llama/Llama-2-7b-chat-hf.
const LLAMA2: &str = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

/// mistralai/Mistral-7B-Instruct-v0.2: Mistral's "v1" format (`<s> [INST] … [/INST]`,
/// system prompt folded into the first user turn), which is what mistral-common's
/// v1 tokenizer produces. The older v0.1 template (no leading space, no system
/// role) differs only in those spaces.
const MISTRAL: &str = "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n";

/// HuggingFaceH4/zephyr-7b-beta; TinyLlama/TinyLlama-1.1B-Chat-v1.0 ships the same.
/// The newlines after `}}` survive trim_blocks, which is where the `\n` after
/// each `</s>` and after the final `<|assistant|>` comes from.
const ZEPHYR: &str = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

/// The Jinja source of a builtin, looked up case-insensitively.
pub fn source(name: &str) -> Option<(&'static str, &'static str)> {
    let name = name.trim().to_ascii_lowercase();
    let (canonical, src) = match name.as_str() {
        "chatml" => ("chatml", CHATML),
        "llama3" => ("llama3", LLAMA3),
        "llama2" => ("llama2", LLAMA2),
        "mistral" => ("mistral", MISTRAL),
        "zephyr" => ("zephyr", ZEPHYR),
        _ => return None,
    };
    Some((canonical, src))
}
