"""llama.cpp's `llama-tokenize` as a function, shared by the tokenizer fixture scripts."""
import json
import pathlib
import subprocess
import tempfile


def llama_cpp_ids(binary, gguf, text, parse_special):
    """Ids of `text` (no BOS) from llama-tokenize. The text goes through a file with
    --no-escape so that backslashes reach the tokenizer unchanged (llama-tokenize processes
    escapes in -p by default)."""
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(text.encode("utf-8"))
        name = f.name
    cmd = [binary, "-m", str(gguf), "-f", name, "--no-escape", "--no-bos", "--ids", "--log-disable"]
    if not parse_special:
        cmd.append("--no-parse-special")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        pathlib.Path(name).unlink()
    line = out.strip().splitlines()[-1] if out.strip() else "[]"
    return json.loads(line)
