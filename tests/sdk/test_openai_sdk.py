"""The official OpenAI Python SDK, used unchanged against infergate-server."""
import openai
import pytest
from openai import OpenAI

MODEL = "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture(scope="module")
def client(base_url):
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list()] == [MODEL]


def test_chat_answers_paris(client):
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0,
        max_tokens=30,
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_stream_with_usage(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 10


def test_completion_max_tokens_and_stop(client):
    reply = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=20, temperature=0, stop=["."])
    assert "Paris" in reply.choices[0].text and "." not in reply.choices[0].text
    assert reply.choices[0].finish_reason == "stop"
    capped = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5, extra_body={"ignore_eos": True})
    assert capped.usage.completion_tokens == 5
    assert capped.choices[0].finish_reason == "length"


def test_completion_stream_matches_non_stream(client):
    args = dict(model=MODEL, prompt="Three animals are", max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
    whole = client.completions.create(**args).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **args) if c.choices)
    assert streamed == whole


def test_seed_reproduces_sampled_text(client):
    args = dict(model=MODEL, prompt="My favourite food is", max_tokens=16, temperature=1.0, seed=1234)
    assert client.completions.create(**args).choices[0].text == client.completions.create(**args).choices[0].text


def test_invalid_parameters_raise_bad_request(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=5)
    assert "temperature" in str(err.value)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=0)


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-9", prompt="hi")
