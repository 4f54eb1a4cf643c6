"""Chat-template conformance: every real template of llama.cpp's models/templates, rendered for
several conversations by HF transformers (the reference) and by `infergate-server render-chat`,
compared byte for byte. Where the reference raises, ours must fail too, and a template's own
`raise_exception` message must appear in ours.

Env: INFERGATE_SERVER_BIN (the release binary), INFERGATE_LLAMA_CPP_MODELS (llama.cpp's
`models` folder; default: the make test-data location).
"""
import json
import os
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path

import jinja2.exceptions
import pytest

import reference

EXPECTED_TEMPLATES = 70
BOS, EOS = "<s>", "</s>"
NOW_RFC3339 = "2024-07-26T10:30:00Z"
NOW = datetime(2024, 7, 26, 10, 30, 0)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

CONVERSATIONS = {
    "system_user": (
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        None,
    ),
    "multi_turn": (
        [
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hi! How can I help you today?"},
            {"role": "user", "content": "Tell me a joke about cats."},
        ],
        None,
    ),
    "text_parts": (
        [
            {"role": "user", "content": [{"type": "text", "text": "Describe "}, {"type": "text", "text": "the sea."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "It is wide and blue."}]},
            {"role": "user", "content": [{"type": "text", "text": "And the sky?"}]},
        ],
        None,
    ),
    # OpenAI's wire format: arguments as a JSON string, content null on the tool-calling turn.
    "tool_call": (
        [
            {"role": "system", "content": "You can call tools."},
            {"role": "user", "content": "What's the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temperature\": 21}"},
        ],
        [WEATHER_TOOL],
    ),
    # transformers' documented format: arguments as an object (printed with tojson or str()).
    "tool_call_dict_args": (
        [
            {"role": "user", "content": "Wetter in Zürich? «Bitte» ✓"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": {"city": "Zürich", "days": 3, "metric": True, "ratio": 0.5, "note": None},
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_2", "content": "sunny, 18°C"},
            {"role": "assistant", "content": "It is sunny and 18°C in Zürich."},
            {"role": "user", "content": "Thanks!"},
        ],
        [WEATHER_TOOL],
    ),
    # Reasoning of an earlier turn (aliased to `thinking`/`reasoning_content` as transformers does),
    # a non-ASCII system prompt with quotes, and an assistant turn last.
    "reasoning_assistant_last": (
        [
            {"role": "system", "content": "Tu es «utile» & \"précis\" — <réponds> brièvement."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "reasoning_content": "Simple arithmetic.", "content": "4"},
            {"role": "user", "content": "Et 3+3 ?"},
            {"role": "assistant", "content": "6", "name": None},
        ],
        None,
    ),
}


def templates_dir() -> Path:
    models = os.environ.get("INFERGATE_LLAMA_CPP_MODELS") or os.path.expanduser(
        "~/.cache/infergate/llama-src-0.3.36/llama_cpp_python-0.3.36/vendor/llama.cpp/models"
    )
    return Path(models) / "templates"


def template_files():
    return sorted(templates_dir().glob("*.jinja"))


def ours(binary, template_path, messages, tools, add_generation_prompt, tmp):
    args = [binary, "render-chat", "--chat-template", str(template_path), "--bos-token", BOS, "--eos-token", EOS,
            "--now", NOW_RFC3339]
    if tools is not None:
        tools_path = Path(tmp) / "tools.json"
        tools_path.write_text(json.dumps(tools))
        args += ["--tools", str(tools_path)]
    if not add_generation_prompt:
        args.append("--no-generation-prompt")
    proc = subprocess.run(args, input=json.dumps(messages).encode(), capture_output=True, timeout=30)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def first_difference(a: str, b: str) -> str:
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"at char {i}: reference {a[max(0, i - 40):i + 40]!r} vs ours {b[max(0, i - 40):i + 40]!r}"


def test_all_templates_render_as_transformers_does():
    binary = os.environ.get("INFERGATE_SERVER_BIN")
    assert binary, "set INFERGATE_SERVER_BIN to the release infergate-server"
    files = template_files()
    assert len(files) == EXPECTED_TEMPLATES, f"expected {EXPECTED_TEMPLATES} templates in {templates_dir()}, found {len(files)}"
    reference.set_now(NOW)
    identical, both_rejected, differences = 0, 0, []
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            source = path.read_text()
            for conv_name, (messages, tools) in CONVERSATIONS.items():
                for agp in (True, False):
                    case = f"{path.stem} / {conv_name} / add_generation_prompt={agp}"
                    try:
                        expected, expected_error = reference.render(
                            source, json.loads(json.dumps(messages)), tools, agp, BOS, EOS
                        ), None
                    except Exception as e:  # noqa: BLE001 - any failure of the reference is compared
                        expected, expected_error = None, e
                    code, out, err = ours(binary, path, messages, tools, agp, tmp)
                    if expected_error is None:
                        if code != 0:
                            differences.append(f"{case}: reference renders, ours fails ({code}): {err.strip()}")
                        elif out != expected:
                            differences.append(f"{case}: output differs {first_difference(expected, out)}")
                        else:
                            identical += 1
                    else:
                        message = str(expected_error)
                        raised = type(expected_error) is jinja2.exceptions.TemplateError
                        if code == 0:
                            differences.append(f"{case}: reference raises {type(expected_error).__name__}: "
                                               f"{message!r}, ours renders")
                        elif code != 1:
                            differences.append(f"{case}: ours exits {code} (not 1): {err.strip()}")
                        elif raised and message not in err:
                            differences.append(f"{case}: reference raises {message!r}, ours: {err.strip()}")
                        else:
                            both_rejected += 1
    total = len(files) * len(CONVERSATIONS) * 2
    print(f"\nchat templates: {len(files)} templates x {len(CONVERSATIONS)} conversations x 2 "
          f"(add_generation_prompt) = {total} renders: {identical} identical, {both_rejected} both rejected, "
          f"{len(differences)} differences")
    for d in differences:
        print("  DIFF", d)
    assert identical + both_rejected + len(differences) == total
    assert not differences, f"{len(differences)} of {total} renders differ from transformers"


@pytest.mark.parametrize("flag", [[], ["--chat-template", "/nonexistent.jinja"]])
def test_usage_errors_exit_2(flag):
    binary = os.environ["INFERGATE_SERVER_BIN"]
    proc = subprocess.run([binary, "render-chat", *flag], input=b"[]", capture_output=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
