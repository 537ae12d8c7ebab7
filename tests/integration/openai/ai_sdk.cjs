// The Vercel AI SDK (`ai` 7 with `@ai-sdk/openai-compatible`) against an
// OpenAI-compatible base URL:
//   node ai_sdk.cjs BASE_URL API_KEY [--model=NAME] [--only=SCENARIO,...]
// Scenarios: plain (generateText), stream (streamText, usage from the
// include_usage chunk), tools and tools_stream (the SDK's tool loop: a tool
// with an execute function and stopWhen, so the model is called again with
// the tool's result), history (300 KiB), auth (401 with a bad key as
// APICallError). See common.cjs for the output.
'use strict';
const { generateText, streamText, tool, isStepCount, APICallError } = require('ai');
const { createOpenAICompatible } = require('@ai-sdk/openai-compatible');
const { z } = require('zod');
const c = require('./common.cjs');

const { baseURL, apiKey, model: modelId } = c.args();
function provider(key) {
  return createOpenAICompatible({ name: 'parley', baseURL, apiKey: key, includeUsage: true });
}
const model = provider(apiKey).chatModel(modelId);

function usage(u) {
  return u && { prompt: u.inputTokens, completion: u.outputTokens, total: u.totalTokens };
}

const calls = [];
const tools = {
  [c.weatherTool.name]: tool({
    description: c.weatherTool.description,
    inputSchema: z.object({ city: z.string().describe('the city') }),
    execute: async ({ city }) => {
      calls.push(city);
      return c.weather(city);
    },
  }),
};

async function toolLoop(stream) {
  calls.length = 0;
  const options = {
    model, tools, prompt: c.weatherCity, stopWhen: isStepCount(3), maxRetries: 0,
  };
  let text;
  let steps;
  let total;
  let finish;
  if (stream) {
    const errors = [];
    const r = streamText({ ...options, onError: ({ error }) => errors.push(error) });
    text = '';
    for await (const piece of r.textStream) text += piece;
    if (errors.length) throw errors[0];
    steps = await r.steps;
    total = await r.totalUsage;
    finish = await r.finishReason;
  } else {
    const r = await generateText(options);
    ({ text, steps, finishReason: finish } = r);
    total = r.totalUsage;
  }
  c.expect(steps.length === 2, `steps ${steps.length}`);
  const call = steps[0].toolCalls[0];
  c.expect(call && call.toolName === c.weatherTool.name, `tool call ${JSON.stringify(steps[0].toolCalls)}`);
  c.expect(call.input.city === c.weatherCity, `input ${JSON.stringify(call.input)}`);
  c.expect(steps[0].finishReason === 'tool-calls', `first finish ${steps[0].finishReason}`);
  c.expect(calls.length === 1 && calls[0] === c.weatherCity, `executed ${JSON.stringify(calls)}`);
  c.expect(text.includes(c.weather(c.weatherCity)), `answer ${JSON.stringify(text)}`);
  c.expect(finish === 'stop', `finish ${finish}`);
  c.expectUsage(usage(steps[0].usage), 'tool call step');
  c.expectUsage(usage(total), 'total');
  return {
    steps: steps.length, tool: call.toolName, input: call.input, text,
    finish: steps.map((s) => s.finishReason), usage: usage(total),
  };
}

c.run('ai', c.versionOf('ai'), {
  async plain() {
    const r = await generateText({
      model, instructions: 'be brief', prompt: 'hello from the ai sdk', maxRetries: 0,
    });
    c.expect(r.text === 'mock: hello from the ai sdk', `text ${JSON.stringify(r.text)}`);
    c.expect(r.finishReason === 'stop', `finish ${r.finishReason}`);
    c.expectUsage(usage(r.usage), 'plain');
    return { text: r.text, finish: r.finishReason, usage: usage(r.usage) };
  },
  async stream() {
    const errors = [];
    const r = streamText({
      model, prompt: 'stream from the ai sdk', maxRetries: 0,
      onError: ({ error }) => errors.push(error),
    });
    let text = '';
    let pieces = 0;
    for await (const piece of r.textStream) {
      text += piece;
      pieces += 1;
    }
    if (errors.length) throw errors[0];
    const u = usage(await r.usage);
    const finish = await r.finishReason;
    c.expect(text === 'mock: stream from the ai sdk', `text ${JSON.stringify(text)}`);
    c.expect(finish === 'stop', `finish ${finish}`);
    c.expectUsage(u, 'stream');
    return { text, pieces, finish, usage: u };
  },
  async tools() {
    return toolLoop(false);
  },
  async tools_stream() {
    return toolLoop(true);
  },
  async history() {
    const all = c.longHistory(300 * 1024, 'the end of a long talk');
    const bytes = JSON.stringify(all).length;
    // ai 7 takes the system prompt as `instructions`, not as a message.
    const messages = all.filter((m) => m.role !== 'system');
    const instructions = all.filter((m) => m.role === 'system').map((m) => m.content).join('\n');
    const r = await generateText({ model, instructions, messages, maxRetries: 0 });
    c.expect(r.text === 'mock: the end of a long talk', `text ${JSON.stringify(r.text)}`);
    c.expectUsage(usage(r.usage), 'history');
    return { messages: messages.length, bytes, text: r.text, usage: usage(r.usage) };
  },
  async auth() {
    try {
      await generateText({
        model: provider(c.badKey).chatModel(modelId), prompt: 'x', maxRetries: 0,
      });
    } catch (e) {
      c.expect(APICallError.isInstance(e), `error class ${e.constructor.name}: ${e.message}`);
      c.expect(e.statusCode === 401, `status ${e.statusCode}`);
      return { errorClass: e.constructor.name, status: e.statusCode, retryable: e.isRetryable };
    }
    throw new Error('unexpected: a bad key was accepted');
  },
});
