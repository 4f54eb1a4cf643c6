"""The reference: HF transformers renders a chat template (`apply_chat_template` without a tokenizer).

`apply_chat_template` normalizes the messages (`_normalize_chat_messages`: message objects to
dicts, top-level `None` values dropped), then calls `render_jinja_template` with the tokenizer's
special tokens as keyword arguments. We do the same with a fixed bos/eos and a fixed "now" for
`strftime_now` (which calls the module's `datetime.now()`).
"""
from datetime import datetime

from transformers.utils import chat_template_utils as _ctu


def set_now(now: datetime) -> None:
    class _FixedDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return now

    _ctu.datetime = _FixedDatetime


def render(template, messages, tools=None, add_generation_prompt=True, bos_token="<s>", eos_token="</s>"):
    chat = _ctu._normalize_chat_messages(messages)
    rendered, _ = _ctu.render_jinja_template(
        conversations=[chat],
        tools=tools,
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
    )
    return rendered[0]
