#!/usr/bin/env python3
"""Records llama.cpp's token ids for a set of strings as a test fixture.

Usage: record-tokenizer-fixtures.py LLAMA_TOKENIZE MODEL.gguf OUT.json
LLAMA_TOKENIZE is llama.cpp's `llama-tokenize` (built from the llama.cpp sources vendored in
the PyPI sdist llama-cpp-python==0.3.36). Special tokens are parsed, as in chat prompts.
"""
import json
import subprocess
import sys

TEXTS = [
    "Hello world",
    "What is the capital of France?",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "Numbers: 12345, 3.14159 and 1,000,000.",
    "caf\u00e9 na\u00efve \u00fcber \u65e5\u672c\u8a9e \U0001f916 \u0645\u0631\u062d\u0628\u0627",
    "  leading spaces,   runs of   spaces\n\n\nnewlines\tand\ttabs  \n",
    "I'm sure you'll see they've gone; it's what we'd do. DON'T SHOUT",
    'fn main() {\n    println!("hi {}", 42);\n}\n',
    "!!! ??? ... --- *** ((( ))) [[[ ]]]",
    "https://example.com/path?query=value&x=1#frag",
    "<|endoftext|>text after end<|im_end|>",
    "   ",
    "a",
]


def main() -> None:
    tool, model, out = sys.argv[1:4]
    fixtures = []
    for text in TEXTS:
        ids = subprocess.run(
            [tool, "-m", model, "--stdin", "--ids", "--log-disable", "--no-bos"],
            input=text.encode(), capture_output=True, check=True,
        ).stdout.decode().strip().splitlines()[-1]
        fixtures.append({"text": text, "ids": json.loads(ids)})
    with open(out, "w") as f:
        json.dump({"tool": "llama.cpp llama-tokenize (llama-cpp-python==0.3.36 sdist)", "fixtures": fixtures}, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
