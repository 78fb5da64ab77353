"""Drives an OpenAI-compatible server with the official openai Python SDK and prints one JSON
object with what it saw; the Go test (TestPythonOpenAISDK) asserts on it, as it does on the npm
SDK's report. Usage: python check_openai.py BASE_URL API_KEY"""

import json
import sys

import openai

base_url, api_key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)
out = {"sdk": openai.__version__}

out["models"] = [m.id for m in client.models.list().data]

cmpl = client.completions.create(model="spa", prompt="Turn 1:", max_tokens=8, n=2, seed=3, logprobs=2)
out["completion"] = {"choices": len(cmpl.choices), "model": cmpl.model, "finish": cmpl.choices[0].finish_reason,
                     "logprobs": len(cmpl.choices[0].logprobs.token_logprobs), "usage": cmpl.usage.total_tokens}

# vLLM's extensions pass through the SDK as extra_body, as RL harnesses send them.
ids = client.completions.create(model="spa", prompt=[5, 6, 7], max_tokens=4, temperature=0,
                                extra_body={"return_token_ids": True})
choice = ids.choices[0].model_dump()
out["tokenIds"] = {"prompt": choice.get("prompt_token_ids"), "generated": len(choice.get("token_ids") or [])}

chat = client.chat.completions.create(model="spa", messages=[{"role": "user", "content": "Turn 1:"}], max_tokens=6,
                                      logprobs=True, top_logprobs=1)
out["chat"] = {"role": chat.choices[0].message.role, "logprobs": len(chat.choices[0].logprobs.content)}

streamed, chunks = "", 0
for chunk in client.chat.completions.create(model="spa", messages=[{"role": "user", "content": "hi"}], max_tokens=6,
                                            seed=1, stream=True):
    chunks += 1
    if chunk.choices and chunk.choices[0].delta.content:
        streamed += chunk.choices[0].delta.content
same = client.chat.completions.create(model="spa", messages=[{"role": "user", "content": "hi"}], max_tokens=6, seed=1)
out["stream"] = {"chunks": chunks, "equal": streamed == same.choices[0].message.content}

try:
    client.completions.create(model="nope", prompt="x")
    out["unknownModel"] = "no error"
except openai.APIStatusError as e:
    out["unknownModel"] = {"status": e.status_code, "message": str(e)}
try:
    client.completions.create(model="spa", prompt="x", temperature=-2)
    out["badTemperature"] = "no error"
except openai.APIStatusError as e:
    body = e.body if isinstance(e.body, dict) else {}
    out["badTemperature"] = {"status": e.status_code, "param": body.get("param")}
print(json.dumps(out))
