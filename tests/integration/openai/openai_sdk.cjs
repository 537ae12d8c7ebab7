// The official `openai` SDK (major 7) against an OpenAI-compatible base URL:
//   node openai_sdk.cjs BASE_URL API_KEY [--model=NAME] [--only=SCENARIO,...]
// Scenarios: plain, stream (include_usage), stream_without_usage (no usage
// chunk unasked), tools and tools_stream (a tool call, then the `tool`
// message and the answer using its result), n2 and n2_stream, logprobs,
// length, image, history (300 KiB), auth (401 with a bad key).
// See common.cjs for the output.
'use strict';
const OpenAI = require('openai');
const c = require('./common.cjs');

const { baseURL, apiKey, model } = c.args();
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30000 });
const tools = [{ type: 'function', function: c.weatherTool }];

function usage(u) {
  return u && { prompt: u.prompt_tokens, completion: u.completion_tokens, total: u.total_tokens };
}

// Reads a stream: every choice's text and tool calls by index, finish
// reasons, the usage chunk.
async function drain(stream) {
  const choices = [];
  let chunks = 0;
  let usageChunk = null;
  for await (const chunk of stream) {
    chunks += 1;
    if (chunk.usage) {
      c.expect(chunk.choices.length === 0, `usage chunk with choices ${JSON.stringify(chunk)}`);
      usageChunk = chunk.usage;
    }
    for (const choice of chunk.choices) {
      const slot = (choices[choice.index] ||= { text: '', toolCalls: [], finish: null });
      const d = choice.delta || {};
      if (d.content) slot.text += d.content;
      for (const t of d.tool_calls || []) {
        const call = (slot.toolCalls[t.index] ||= { id: '', name: '', arguments: '' });
        if (t.id) call.id = t.id;
        if (t.function && t.function.name) call.name += t.function.name;
        if (t.function && t.function.arguments) call.arguments += t.function.arguments;
      }
      if (choice.finish_reason) slot.finish = choice.finish_reason;
    }
  }
  return { choices, chunks, usage: usage(usageChunk) };
}

async function toolRoundTrip(stream) {
  const messages = [{ role: 'user', content: c.weatherCity }];
  let call;
  let finish1;
  let usage1;
  if (stream) {
    const s = await drain(await client.chat.completions.create({
      model, messages, tools, stream: true, stream_options: { include_usage: true },
    }));
    const slot = s.choices[0];
    c.expect(slot && slot.toolCalls.length === 1, `streamed tool calls ${JSON.stringify(slot)}`);
    call = slot.toolCalls[0];
    finish1 = slot.finish;
    usage1 = s.usage;
    messages.push({
      role: 'assistant',
      content: null,
      tool_calls: [{ id: call.id, type: 'function', function: { name: call.name, arguments: call.arguments } }],
    });
  } else {
    const r = await client.chat.completions.create({ model, messages, tools });
    const m = r.choices[0].message;
    c.expect(m.content === null, `content beside tool_calls: ${JSON.stringify(m.content)}`);
    c.expect(m.tool_calls && m.tool_calls.length === 1, `tool_calls ${JSON.stringify(m)}`);
    call = { id: m.tool_calls[0].id, ...m.tool_calls[0].function };
    finish1 = r.choices[0].finish_reason;
    usage1 = usage(r.usage);
    messages.push(m);
  }
  c.expect(finish1 === 'tool_calls', `finish_reason ${finish1}`);
  c.expect(call.name === c.weatherTool.name && call.id, `call ${JSON.stringify(call)}`);
  const args = JSON.parse(call.arguments);
  c.expect(args.city === c.weatherCity, `arguments ${call.arguments}`);
  c.expectUsage(usage1, 'tool call');
  const result = c.weather(args.city);
  messages.push({ role: 'tool', tool_call_id: call.id, content: result });
  let text;
  let finish2;
  let usage2;
  if (stream) {
    const s = await drain(await client.chat.completions.create({
      model, messages, tools, stream: true, stream_options: { include_usage: true },
    }));
    ({ text, finish: finish2 } = s.choices[0]);
    usage2 = s.usage;
  } else {
    const r = await client.chat.completions.create({ model, messages, tools });
    text = r.choices[0].message.content;
    finish2 = r.choices[0].finish_reason;
    usage2 = usage(r.usage);
  }
  c.expect(typeof text === 'string' && text.includes(result), `answer ${JSON.stringify(text)}`);
  c.expect(finish2 === 'stop', `final finish_reason ${finish2}`);
  c.expectUsage(usage2, 'answer');
  return { tool: call.name, callId: call.id, arguments: args, text, finish: [finish1, finish2] };
}

c.run('openai', c.versionOf('openai'), {
  async plain() {
    const r = await client.chat.completions.create({
      model,
      messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello from openai' }],
      temperature: 0.2,
    });
    const text = r.choices[0].message.content;
    c.expect(r.object === 'chat.completion', `object ${r.object}`);
    c.expect(text === 'mock: hello from openai', `text ${JSON.stringify(text)}`);
    c.expect(r.choices[0].finish_reason === 'stop', `finish ${r.choices[0].finish_reason}`);
    c.expectUsage(usage(r.usage), 'plain');
    return { text, finish: r.choices[0].finish_reason, usage: usage(r.usage) };
  },
  async stream() {
    const s = await drain(await client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'stream this please' }],
      stream: true,
      stream_options: { include_usage: true },
    }));
    const { text, finish } = s.choices[0] || {};
    c.expect(text === 'mock: stream this please', `text ${JSON.stringify(text)}`);
    c.expect(finish === 'stop', `finish ${finish}`);
    c.expect(s.chunks >= 3, `chunks ${s.chunks}`);
    c.expectUsage(s.usage, 'usage chunk');
    return { text, finish, chunks: s.chunks, usage: s.usage };
  },
  async stream_without_usage() {
    // Not asked for, no usage chunk: code reading chunk.choices[0] must not meet `choices: []`.
    const stream = await client.chat.completions.create({
      model, messages: [{ role: 'user', content: 'no usage please' }], stream: true,
    });
    let text = '';
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      c.expect(chunk.choices.length === 1 && !chunk.usage, `chunk ${JSON.stringify(chunk)}`);
      text += chunk.choices[0].delta.content || '';
    }
    c.expect(text === 'mock: no usage please', `text ${JSON.stringify(text)}`);
    return { text, chunks };
  },
  async tools() {
    return toolRoundTrip(false);
  },
  async tools_stream() {
    return toolRoundTrip(true);
  },
  async n2() {
    const r = await client.chat.completions.create({
      model, n: 2, messages: [{ role: 'user', content: 'pick one' }],
    });
    const texts = r.choices.map((ch) => ch.message.content);
    c.expect(r.choices.length === 2, `choices ${r.choices.length}`);
    c.expect(r.choices[0].index === 0 && r.choices[1].index === 1, 'indexes');
    c.expect(texts[0] === 'mock: pick one' && texts[1] !== texts[0] && texts[1].includes('pick one'),
      `texts ${JSON.stringify(texts)}`);
    c.expectUsage(usage(r.usage), 'n2');
    return { texts, usage: usage(r.usage) };
  },
  async n2_stream() {
    const s = await drain(await client.chat.completions.create({
      model, n: 2, messages: [{ role: 'user', content: 'pick one' }], stream: true,
      stream_options: { include_usage: true },
    }));
    const texts = s.choices.map((ch) => ch.text);
    c.expect(s.choices.length === 2 && s.choices.every((ch) => ch.finish === 'stop'),
      `choices ${JSON.stringify(s.choices)}`);
    c.expect(texts[0] === 'mock: pick one' && texts[1] !== texts[0] && texts[1].includes('pick one'),
      `texts ${JSON.stringify(texts)}`);
    c.expectUsage(s.usage, 'n2_stream');
    return { texts, usage: s.usage };
  },
  async logprobs() {
    const r = await client.chat.completions.create({
      model, logprobs: true, top_logprobs: 2, messages: [{ role: 'user', content: 'how sure' }],
    });
    const ch = r.choices[0];
    const lp = ch.logprobs && ch.logprobs.content;
    c.expect(Array.isArray(lp) && lp.length > 0, `logprobs ${JSON.stringify(ch.logprobs)}`);
    c.expect(lp.map((t) => t.token).join('') === ch.message.content, 'tokens spell the content');
    c.expect(lp.every((t) => t.logprob <= 0 && t.top_logprobs.length === 2), 'top_logprobs');
    return { tokens: lp.length, text: ch.message.content };
  },
  async length() {
    const r = await client.chat.completions.create({
      model, max_tokens: 2, messages: [{ role: 'user', content: 'one two three four' }],
    });
    const ch = r.choices[0];
    c.expect(ch.finish_reason === 'length', `finish ${ch.finish_reason}`);
    c.expect(ch.message.content === 'mock: one', `text ${JSON.stringify(ch.message.content)}`);
    return { text: ch.message.content, finish: ch.finish_reason };
  },
  async image() {
    const r = await client.chat.completions.create({
      model,
      messages: [{
        role: 'user',
        content: [
          { type: 'text', text: 'what is this' },
          { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
        ],
      }],
    });
    const text = r.choices[0].message.content;
    c.expect(text === 'mock: what is this (images: 1)', `text ${JSON.stringify(text)}`);
    return { text };
  },
  async history() {
    const messages = c.longHistory(300 * 1024, 'the end of a long talk');
    const bytes = JSON.stringify(messages).length;
    const r = await client.chat.completions.create({ model, messages });
    const text = r.choices[0].message.content;
    c.expect(text === 'mock: the end of a long talk', `text ${JSON.stringify(text)}`);
    c.expectUsage(usage(r.usage), 'history');
    c.expect(r.usage.prompt_tokens > 40000, `prompt_tokens ${r.usage.prompt_tokens}`);
    return { messages: messages.length, bytes, text, usage: usage(r.usage) };
  },
  async auth() {
    const wrong = new OpenAI({ baseURL, apiKey: c.badKey, maxRetries: 0, timeout: 30000 });
    try {
      await wrong.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }] });
    } catch (e) {
      c.expect(e instanceof OpenAI.AuthenticationError, `error class ${e.constructor.name}: ${e.message}`);
      c.expect(e.status === 401, `status ${e.status}`);
      return { errorClass: e.constructor.name, status: e.status, code: e.code };
    }
    throw new Error('unexpected: a bad key was accepted');
  },
});
