# Sourced by scripts/fuzz.sh and scripts/fuzz_device.sh, so a target's libFuzzer options are
# the same in both (issue 9; docs/RELIABILITY.md).

FUZZ_TARGETS=(gguf_reader tokenizer_vocab tokenizer_text detokenize chat_template safetensors_header onnx_voice voice_gguf lora_adapter peft_adapter bundle_reader router_reader)

# fuzz_options TARGET DICTS: the input size limit and dictionary of TARGET, with the
# dictionaries in folder DICTS.
fuzz_options() {
    local d=$2
    case "$1" in
        gguf_reader) echo "-max_len=32768 -dict=$d/gguf.dict" ;;
        tokenizer_vocab) echo "-max_len=16384 -dict=$d/tokenizer.dict" ;;
        tokenizer_text | detokenize) echo "-max_len=4096 -dict=$d/tokenizer.dict" ;;
        chat_template) echo "-max_len=8192 -dict=$d/jinja.dict" ;;
        safetensors_header) echo "-max_len=16384" ;;
        onnx_voice) echo "-max_len=65536 -dict=$d/onnx.dict" ;;
        voice_gguf | lora_adapter) echo "-max_len=32768 -dict=$d/gguf.dict" ;;
        peft_adapter) echo "-max_len=32768 -dict=$d/peft.dict" ;;
        # The seed is a whole bundle (golden q8_0 backbone + an adapter, ~195 kB).
        bundle_reader) echo "-max_len=262144 -dict=$d/bundle.dict" ;;
        router_reader) echo "-max_len=8192 -dict=$d/gguf.dict" ;;
        *) return 1 ;;
    esac
}

# The limits every run uses: a unit over 1 s is a finding, and so is a process over 2 GiB
# resident or (ASan builds; the `all` binary checks it itself) one allocation over 1 GiB.
FUZZ_LIMITS=(-timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=1024)
