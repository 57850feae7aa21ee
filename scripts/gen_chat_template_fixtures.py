#!/usr/bin/env python3
"""Generate expected chat-template renderings for runtime/src/chat_template.rs tests.

Renders real models' `chat_template`s with Python jinja2 configured the way HF
transformers' `apply_chat_template` does (ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks, loopcontrols, its {% generation %} tag, raise_exception, strftime_now and
HF's own `tojson`), and writes tests/fixtures/chat_templates/expected.json.

Templates come from two places:
  * copied verbatim from llama.cpp's models/templates/ (the vendored llama.cpp
    in the llama-cpp-python sdist; pass --llama-cpp-templates to point elsewhere);
    if that folder is missing, the copies already in the fixtures folder are used;
  * INLINE below, for models llama.cpp does not ship a file for; each carries
    the HF `tokenizer_config.json` value (JSON-decoded) and where it was taken from.

Usage: pip install jinja2 && python3 scripts/gen_chat_template_fixtures.py
"""

import argparse
import json
import os
import shutil
from datetime import datetime, timezone

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "chat_templates")
DEFAULT_LLAMA_CPP = (
    "/work/ref/full/llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates"
)

# strftime_now is pinned so the fixtures do not depend on the day they were made;
# the Rust tests pin the same instant (2024-07-26T12:00:00Z).
NOW_UNIX = 1721995200

# (file, bos_token, eos_token) for templates copied from llama.cpp.
COPIED = [
    ("Qwen-Qwen2.5-7B-Instruct.jinja", "", "<|im_end|>"),
    ("Qwen-Qwen3-0.6B.jinja", "", "<|im_end|>"),
    # Uses HF's {% generation %} tag.
    ("LFM2.5-8B-A1B.jinja", "<|startoftext|>", "<|im_end|>"),
    # Takes `tools|length` of an undefined `tools` (0 in jinja2).
    ("unsloth-Apriel-1.5.jinja", "<s>", "</s>"),
    ("meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    ("meta-llama-Llama-3.2-3B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>"),
    ("google-gemma-2-2b-it.jinja", "<bos>", "<eos>"),
    ("microsoft-Phi-3.5-mini-instruct.jinja", "<s>", "<|endoftext|>"),
    (
        "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
        "<｜begin▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
    ),
]

# file -> (bos, eos, source). Sources are the JSON-decoded tokenizer_config values.
INLINE = {
    # teknium/OpenHermes-2.5-Mistral-7B; also llama.cpp tests/test-chat-template.cpp.
    "teknium-OpenHermes-2.5-Mistral-7B.jinja": (
        "<s>",
        "<|im_end|>",
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    ),
    # meta-llama/Meta-Llama-3-8B-Instruct (original Llama 3, before 3.1's date header).
    "meta-llama-Meta-Llama-3-8B-Instruct.jinja": (
        "<|begin_of_text|>",
        "<|eot_id|>",
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    ),
    # meta-llama/Llama-2-7b-chat-hf.
    "meta-llama-Llama-2-7b-chat-hf.jinja": (
        "<s>",
        "</s>",
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
    ),
    # mistralai/Mistral-7B-Instruct-v0.1 (the pre-'v1' template, no system role);
    # llama.cpp tests/test-chat-template.cpp.
    "mistralai-Mistral-7B-Instruct-v0.1.jinja": (
        "<s>",
        "</s>",
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
    ),
    # mistralai/Mistral-7B-Instruct-v0.2 (Mistral's 'v1' template with a system
    # prompt); llama.cpp tests/test-chat-template.cpp.
    "mistralai-Mistral-7B-Instruct-v0.2.jinja": (
        "<s>",
        "</s>",
        "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n",
    ),
    # HuggingFaceH4/zephyr-7b-beta; TinyLlama/TinyLlama-1.1B-Chat-v1.0 ships the same.
    "HuggingFaceH4-zephyr-7b-beta.jinja": (
        "<s>",
        "</s>",
        "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
    ),
}

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATIONS = {
    "user": [{"role": "user", "content": "What is 2+2?"}],
    "system_user": [SYSTEM, {"role": "user", "content": "Hello!"}],
    "multi_turn": [
        SYSTEM,
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": "Who are you?"},
    ],
    "multi_turn_no_system": [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "   I am an assistant   "},
        {"role": "user", "content": "Another question"},
    ],
    "ends_with_assistant": [
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Hi!"},
    ],
    "tricky_text": [
        {
            "role": "user",
            "content": "  Spaces, {{ braces }} {% tags %}, ünïcødé 😀\nand a second line.\n",
        }
    ],
}


class AssistantTracker(jinja2.ext.Extension):
    # HF's extension, minus the index tracking: the body renders unchanged.
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        call = self.call_method("_generation_support")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _generation_support(self, caller):
        return caller()


class TemplateException(Exception):
    pass


def raise_exception(message):
    raise TemplateException(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # HF's override: plain json.dumps, no HTML escaping (unlike jinja2's builtin).
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def strftime_now(fmt):
    return datetime.fromtimestamp(NOW_UNIX, tz=timezone.utc).strftime(fmt)


def make_env():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp-templates", default=DEFAULT_LLAMA_CPP)
    args = ap.parse_args()

    os.makedirs(FIXTURES, exist_ok=True)
    templates = []
    for name, bos, eos in COPIED:
        src = os.path.join(args.llama_cpp_templates, name)
        dst = os.path.join(FIXTURES, name)
        if os.path.exists(src):
            shutil.copyfile(src, dst)
        templates.append((name, bos, eos))
    for name, (bos, eos, source) in INLINE.items():
        with open(os.path.join(FIXTURES, name), "w", encoding="utf-8", newline="") as f:
            f.write(source)
        templates.append((name, bos, eos))

    env = make_env()
    cases = []
    for name, bos, eos in templates:
        with open(os.path.join(FIXTURES, name), encoding="utf-8", newline="") as f:
            source = f.read()
        tmpl = env.from_string(source)
        for conv_name, messages in CONVERSATIONS.items():
            for agp in (False, True):
                case = {
                    "template": name,
                    "bos_token": bos,
                    "eos_token": eos,
                    "conversation": conv_name,
                    "add_generation_prompt": agp,
                }
                try:
                    case["expected"] = tmpl.render(
                        messages=messages,
                        add_generation_prompt=agp,
                        bos_token=bos,
                        eos_token=eos,
                    )
                except TemplateException as e:
                    case["error"] = str(e)
                except TemplateError as e:
                    raise SystemExit(f"{name}/{conv_name}: jinja2 failed: {e}")
                cases.append(case)

    out = {
        "generator": "scripts/gen_chat_template_fixtures.py",
        "jinja2_version": jinja2.__version__,
        "now_unix": NOW_UNIX,
        "conversations": CONVERSATIONS,
        "cases": cases,
    }
    path = os.path.join(FIXTURES, "expected.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases for {len(templates)} templates to {path}")


if __name__ == "__main__":
    main()
