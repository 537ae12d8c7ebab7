// LangChain JS (`@langchain/openai` 1 with `@langchain/core`) against an
// OpenAI-compatible base URL:
//   node langchain.cjs BASE_URL API_KEY [--model=NAME] [--only=SCENARIO,...]
// Scenarios: plain (invoke), stream (stream with streamUsage, so usage comes
// from the include_usage chunk), tools and tools_stream (bindTools, the
// tool's ToolMessage, then the answer using its result), history (300 KiB),
// auth (401 with a bad key, lc_error_code MODEL_AUTHENTICATION). See
// common.cjs for the output.
'use strict';
const { ChatOpenAI } = require('@langchain/openai');
const { HumanMessage, AIMessage, SystemMessage } = require('@langchain/core/messages');
const { tool } = require('@langchain/core/tools');
const { z } = require('zod');
const c = require('./common.cjs');

const { baseURL, apiKey, model } = c.args();
function chat(key) {
  return new ChatOpenAI({
    model, apiKey: key, configuration: { baseURL }, maxRetries: 0, timeout: 30000, streamUsage: true,
  });
}
const llm = chat(apiKey);

function usage(m) {
  const u = m.usage_metadata;
  return u && { prompt: u.input_tokens, completion: u.output_tokens, total: u.total_tokens };
}

const weatherTool = tool(async ({ city }) => c.weather(city), {
  name: c.weatherTool.name,
  description: c.weatherTool.description,
  schema: z.object({ city: z.string().describe('the city') }),
});

async function collect(stream) {
  let all;
  let chunks = 0;
  for await (const chunk of stream) {
    all = all ? all.concat(chunk) : chunk;
    chunks += 1;
  }
  return { message: all, chunks };
}

async function toolRoundTrip(stream) {
  const withTools = llm.bindTools([weatherTool]);
  const messages = [new HumanMessage(c.weatherCity)];
  const ask = async () =>
    stream ? (await collect(await withTools.stream(messages))).message : withTools.invoke(messages);
  const first = await ask();
  c.expect(first.tool_calls && first.tool_calls.length === 1, `tool_calls ${JSON.stringify(first.tool_calls)}`);
  const call = first.tool_calls[0];
  c.expect(call.name === c.weatherTool.name && call.id, `call ${JSON.stringify(call)}`);
  c.expect(call.args.city === c.weatherCity, `args ${JSON.stringify(call.args)}`);
  const finish1 = first.response_metadata && first.response_metadata.finish_reason;
  c.expect(finish1 === 'tool_calls', `finish ${finish1}`);
  c.expectUsage(usage(first), 'tool call');
  // Invoked with the tool call, the tool answers with its ToolMessage.
  const toolMessage = await weatherTool.invoke(call);
  c.expect(toolMessage.constructor.name === 'ToolMessage' && toolMessage.tool_call_id === call.id,
    `tool message ${JSON.stringify(toolMessage)}`);
  messages.push(new AIMessage({ content: first.content, tool_calls: first.tool_calls }), toolMessage);
  const answer = await ask();
  const text = answer.content;
  c.expect(typeof text === 'string' && text.includes(c.weather(c.weatherCity)), `answer ${JSON.stringify(text)}`);
  const finish2 = answer.response_metadata && answer.response_metadata.finish_reason;
  c.expect(finish2 === 'stop', `final finish ${finish2}`);
  c.expectUsage(usage(answer), 'answer');
  return { tool: call.name, callId: call.id, args: call.args, text, finish: [finish1, finish2] };
}

c.run('@langchain/openai', c.versionOf('@langchain/openai'), {
  async plain() {
    const m = await llm.invoke([new SystemMessage('be brief'), new HumanMessage('hello from langchain')]);
    const finish = m.response_metadata.finish_reason;
    c.expect(m.content === 'mock: hello from langchain', `content ${JSON.stringify(m.content)}`);
    c.expect(finish === 'stop', `finish ${finish}`);
    c.expectUsage(usage(m), 'plain');
    return { text: m.content, finish, usage: usage(m) };
  },
  async stream() {
    const { message: m, chunks } = await collect(await llm.stream('stream from langchain'));
    c.expect(m.content === 'mock: stream from langchain', `content ${JSON.stringify(m.content)}`);
    const finish = m.response_metadata && m.response_metadata.finish_reason;
    c.expect(finish === 'stop', `finish ${finish}`);
    c.expectUsage(usage(m), 'stream');
    return { text: m.content, chunks, finish, usage: usage(m) };
  },
  async tools() {
    return toolRoundTrip(false);
  },
  async tools_stream() {
    return toolRoundTrip(true);
  },
  async history() {
    const messages = c.longHistory(300 * 1024, 'the end of a long talk');
    const bytes = JSON.stringify(messages).length;
    const m = await llm.invoke(messages.map((x) => [x.role === 'assistant' ? 'ai' : x.role === 'user' ? 'human' : x.role, x.content]));
    c.expect(m.content === 'mock: the end of a long talk', `content ${JSON.stringify(m.content)}`);
    c.expectUsage(usage(m), 'history');
    return { messages: messages.length, bytes, text: m.content, usage: usage(m) };
  },
  async auth() {
    try {
      await chat(c.badKey).invoke('x');
    } catch (e) {
      c.expect(e.lc_error_code === 'MODEL_AUTHENTICATION', `error ${e.constructor.name} ${e.lc_error_code}: ${e.message}`);
      c.expect(e.status === 401, `status ${e.status}`);
      return { errorClass: e.constructor.name, lcErrorCode: e.lc_error_code, status: e.status };
    }
    throw new Error('unexpected: a bad key was accepted');
  },
});
