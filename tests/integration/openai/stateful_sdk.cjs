// The official `openai` SDK (major 7) against Parley's stateful OpenAI API
// (API.md section 5a: Conversations), across the nodes of a cluster:
//   node stateful_sdk.cjs BASE_URL API_KEY OTHER_KEY --nodes=URL,URL [--only=SCENARIO,...]
// BASE_URL and every --nodes URL are `http://host:port/v1` of nodes of one
// cluster; OTHER_KEY belongs to another user. Each scenario spreads its
// calls over the nodes in turn.
// Scenarios: conversations (create with items and metadata, retrieve,
// update, delete, then 404), paging (items both ways, the SDK following
// `last_id`/`has_more`, explicit `after`), isolation (another user's ids and
// unknown ids: NotFoundError, 404 in OpenAI's error shape); Responses:
// chain (previous_response_id, conversation, instructions, options,
// retrieve, input items), fork, store_false, idempotency,
// responses_isolation, replay_and_options (a replayed history in `input`
// stored with its turn; retrieve gives back the request's options),
// conversation_idempotency (Idempotency-Key on conversations.create). Not in
// the default run (the test kills a node
// between them): kill_start (two chained responses in --conversation=ID
// through BASE_URL) and kill_continue (a third after --prev=ID, retrying
// 503 as the SDK does, then everything acknowledged is there).
// See common.cjs for the output.
'use strict';
const OpenAI = require('openai');
const c = require('./common.cjs');

const { baseURL, apiKey } = c.args();
const otherKey = process.argv.slice(2).filter((a) => !a.startsWith('--'))[2];
const nodesOption = process.argv.slice(2).find((a) => a.startsWith('--nodes='));
const urls = [baseURL, ...(nodesOption ? nodesOption.slice(8).split(',').filter(Boolean) : [])];
const clients = urls.map((u) => new OpenAI({ baseURL: u, apiKey, maxRetries: 0, timeout: 30000 }));
const others = urls.map((u) => new OpenAI({ baseURL: u, apiKey: otherKey, maxRetries: 0, timeout: 30000 }));
/// `--NAME=value` of the command line ('' when absent).
function option(name) {
  const hit = process.argv.slice(2).find((a) => a.startsWith(`--${name}=`));
  return hit ? hit.slice(name.length + 3) : '';
}
let turn = 0;
/// The next node's client (round robin over the cluster).
function next() {
  turn += 1;
  return clients[turn % clients.length];
}

function textOf(item) {
  return (item.content || []).map((p) => p.text).join('');
}

async function expectNotFound(fn, what) {
  try {
    await fn();
  } catch (e) {
    c.expect(e instanceof OpenAI.NotFoundError, `${what}: ${e.constructor.name}: ${e.message}`);
    c.expect(e.status === 404 && e.error && e.error.code === 'not_found' &&
      typeof e.error.message === 'string' && typeof e.error.type === 'string',
    `${what}: error ${JSON.stringify(e.error)}`);
    return e.status;
  }
  throw new Error(`unexpected: ${what} succeeded`);
}

/// Every item of a conversation through the SDK's auto-pagination.
async function allItems(client, id, query) {
  const out = [];
  for await (const item of client.conversations.items.list(id, query)) out.push(item);
  return out;
}

/// The text of a Response's output, checked against its shape.
function outputOf(r, what) {
  c.expect(/^resp_/.test(r.id) && r.object === 'response' && r.status === 'completed',
    `${what}: ${JSON.stringify(r)}`);
  c.expect(r.output.length === 1 && r.output[0].type === 'message' && r.output[0].role === 'assistant',
    `${what}: output ${JSON.stringify(r.output)}`);
  const u = r.usage;
  c.expect(u && u.input_tokens > 0 && u.output_tokens > 0 &&
    u.total_tokens === u.input_tokens + u.output_tokens &&
    u.input_tokens_details.cached_tokens === 0 && u.output_tokens_details.reasoning_tokens === 0,
  `${what}: usage ${JSON.stringify(u)}`);
  c.expect(typeof r.output_text === 'string' && r.output_text.length > 0 &&
    r.output_text === textOf(r.output[0]), `${what}: output_text ${JSON.stringify(r.output_text)}`);
  return r.output_text;
}

async function conversationTexts(id) {
  return (await allItems(next(), id, { order: 'asc' })).map(textOf);
}

const scenarios = {
  async conversations() {
    const conv = await next().conversations.create({
      metadata: { topic: 'demo' },
      items: [
        { type: 'message', role: 'user', content: 'hello there' },
        { role: 'assistant', content: [{ type: 'output_text', text: 'hi!' }] },
        { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'part one, ' },
          { type: 'input_text', text: 'part two' }] },
      ],
    });
    c.expect(/^conv_[0-9a-f]+$/.test(conv.id) && conv.object === 'conversation',
      `created ${JSON.stringify(conv)}`);
    c.expect(Number.isInteger(conv.created_at) &&
      Math.abs(conv.created_at - Date.now() / 1000) < 300, `created_at ${conv.created_at}`);
    c.expect(conv.metadata.topic === 'demo', `metadata ${JSON.stringify(conv.metadata)}`);
    const got = await next().conversations.retrieve(conv.id);
    c.expect(got.id === conv.id && got.created_at === conv.created_at &&
      got.metadata.topic === 'demo', `retrieved ${JSON.stringify(got)}`);
    const updated = await next().conversations.update(conv.id, { metadata: { topic: 'changed', n: '2' } });
    c.expect(updated.metadata.topic === 'changed' && updated.metadata.n === '2',
      `updated ${JSON.stringify(updated)}`);
    const again = await next().conversations.retrieve(conv.id);
    c.expect(again.metadata.topic === 'changed', `after update ${JSON.stringify(again)}`);
    const items = await allItems(next(), conv.id, { order: 'asc' });
    c.expect(items.length === 3, `items ${JSON.stringify(items)}`);
    c.expect(items.map((i) => i.role).join() === 'user,assistant,user', `roles ${JSON.stringify(items)}`);
    c.expect(textOf(items[0]) === 'hello there' && textOf(items[2]) === 'part one, part two',
      `texts ${JSON.stringify(items)}`);
    c.expect(items[0].type === 'message' && items[0].status === 'completed' &&
      items[0].content[0].type === 'input_text' && items[1].content[0].type === 'output_text',
    `shapes ${JSON.stringify(items)}`);
    const added = await next().conversations.items.create(conv.id, {
      items: [{ type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'noted' }] },
        { role: 'user', content: 'and more' }],
    });
    c.expect(added.data.length === 2 && textOf(added.data[0]) === 'noted' &&
      textOf(added.data[1]) === 'and more', `added ${JSON.stringify(added)}`);
    const latest = await next().conversations.items.list(conv.id, { limit: 1 });
    c.expect(latest.data[0].id === added.data[1].id && latest.has_more === true,
      `latest ${JSON.stringify(latest.data)}`);
    const deleted = await next().conversations.delete(conv.id);
    c.expect(deleted.id === conv.id && deleted.deleted === true &&
      deleted.object === 'conversation.deleted', `deleted ${JSON.stringify(deleted)}`);
    for (const client of clients) {
      await expectNotFound(() => client.conversations.retrieve(conv.id), 'retrieve after delete');
      await expectNotFound(() => client.conversations.items.list(conv.id), 'items after delete');
    }
    await expectNotFound(() => next().conversations.delete(conv.id), 'delete twice');
    return { id: conv.id, items: items.length, added: added.data.length };
  },
  async paging() {
    const texts = Array.from({ length: 7 }, (_, i) => `message ${i + 1}`);
    const conv = await next().conversations.create({
      items: texts.map((t, i) => ({ role: i % 2 === 0 ? 'user' : 'assistant', content: t })),
    });
    const asc = await allItems(next(), conv.id, { order: 'asc', limit: 2 });
    c.expect(asc.map(textOf).join('|') === texts.join('|'), `asc ${JSON.stringify(asc.map(textOf))}`);
    const desc = await allItems(next(), conv.id, { order: 'desc', limit: 3 });
    c.expect(desc.map(textOf).join('|') === [...texts].reverse().join('|'),
      `desc ${JSON.stringify(desc.map(textOf))}`);
    const byDefault = await next().conversations.items.list(conv.id, { limit: 2 });
    c.expect(byDefault.data.length === 2 && textOf(byDefault.data[0]) === 'message 7' &&
      byDefault.has_more === true && byDefault.last_id === byDefault.data[1].id,
    `default page ${JSON.stringify(byDefault.data)}`);
    const after = await next().conversations.items.list(conv.id, { order: 'asc', after: asc[4].id, limit: 10 });
    c.expect(after.data.map(textOf).join('|') === 'message 6|message 7' && after.has_more === false &&
      after.data[0].id === asc[5].id && after.last_id === asc[6].id, `after ${JSON.stringify(after.data)}`);
    const ids = new Set(asc.map((i) => i.id));
    c.expect(ids.size === 7, 'item ids are distinct');
    return { asc: asc.length, desc: desc.length };
  },
  async chain() {
    const r1 = await next().responses.create({ model: 'mock-model', input: 'first question',
      instructions: 'answer briefly', metadata: { run: 'chain' } });
    const t1 = outputOf(r1, 'r1');
    c.expect(r1.conversation && /^conv_/.test(r1.conversation.id) && r1.previous_response_id === null &&
      r1.instructions === 'answer briefly' && r1.metadata.run === 'chain', `r1 ${JSON.stringify(r1)}`);
    const r2 = await next().responses.create({ input: [{ role: 'user', content: 'second question' }],
      previous_response_id: r1.id, temperature: 0.5, max_output_tokens: 100 });
    const t2 = outputOf(r2, 'r2');
    c.expect(r2.conversation.id === r1.conversation.id && r2.previous_response_id === r1.id &&
      r2.temperature === 0.5 && r2.max_output_tokens === 100 && r2.instructions === null,
    `r2 ${JSON.stringify(r2)}`);
    const r3 = await next().responses.create({ input: 'third question',
      conversation: r1.conversation.id });
    outputOf(r3, 'r3');
    c.expect(r3.conversation.id === r1.conversation.id, `r3 ${JSON.stringify(r3)}`);
    const r4 = await next().responses.create({ input: 'fourth', conversation: { id: r1.conversation.id } });
    outputOf(r4, 'r4');
    const texts = await conversationTexts(r1.conversation.id);
    c.expect(texts.length === 8 && texts[0] === 'first question' && texts[1] === t1 &&
      texts[2] === 'second question' && texts[3] === t2 && texts[6] === 'fourth',
    `conversation ${JSON.stringify(texts)}`);
    const got = await next().responses.retrieve(r2.id);
    c.expect(got.id === r2.id && got.output_text === t2 && got.previous_response_id === r1.id &&
      got.conversation.id === r1.conversation.id && got.usage.total_tokens === r2.usage.total_tokens,
    `retrieved ${JSON.stringify(got)}`);
    const inputs = await next().responses.inputItems.list(r2.id);
    c.expect(inputs.data.length === 1 && textOf(inputs.data[0]) === 'second question' &&
      inputs.data[0].role === 'user', `input items ${JSON.stringify(inputs.data)}`);
    await next().responses.delete(r4.id);
    await expectNotFound(() => next().responses.retrieve(r4.id), 'retrieve a deleted response');
    await expectNotFound(() => next().responses.delete(r4.id), 'delete twice');
    await expectNotFound(() => next().responses.create({ input: 'x', previous_response_id: r4.id }),
      'continue a deleted response');
    c.expect((await conversationTexts(r1.conversation.id)).length === 8,
      'deleting a response keeps its conversation items');
    await next().conversations.delete(r1.conversation.id);
    await expectNotFound(() => next().responses.retrieve(r1.id), 'a response of a deleted conversation');
    return { conversation: r1.conversation.id, responses: 4 };
  },
  async fork() {
    const r1 = await next().responses.create({ input: 'root' });
    const r2 = await next().responses.create({ input: 'branch a', previous_response_id: r1.id });
    const r3 = await next().responses.create({ input: 'branch b', previous_response_id: r1.id });
    outputOf(r3, 'fork');
    c.expect(r3.conversation.id !== r1.conversation.id && r2.conversation.id === r1.conversation.id,
      `fork conversations ${r1.conversation.id} ${r2.conversation.id} ${r3.conversation.id}`);
    const old = await conversationTexts(r1.conversation.id);
    const forked = await conversationTexts(r3.conversation.id);
    c.expect(old.length === 4 && old[2] === 'branch a', `old ${JSON.stringify(old)}`);
    c.expect(forked.length === 4 && forked[0] === 'root' && forked[1] === old[1] &&
      forked[2] === 'branch b', `fork ${JSON.stringify(forked)}`);
    const r4 = await next().responses.create({ input: 'on the fork', previous_response_id: r3.id });
    c.expect(r4.conversation.id === r3.conversation.id, `continued fork ${JSON.stringify(r4)}`);
    return { forked: r3.conversation.id };
  },
  async store_false() {
    const base = await next().responses.create({ input: 'remember me' });
    const before = await conversationTexts(base.conversation.id);
    const r = await next().responses.create({ input: 'not kept', store: false,
      previous_response_id: base.id });
    outputOf(r, 'store false');
    c.expect(r.store === false, `store ${JSON.stringify(r)}`);
    const after = await conversationTexts(base.conversation.id);
    c.expect(JSON.stringify(before) === JSON.stringify(after), `stored ${JSON.stringify(after)}`);
    await expectNotFound(() => next().responses.retrieve(r.id), 'retrieve an unstored response');
    const alone = await next().responses.create({ store: false, input: [
      { role: 'system', content: 'be terse' }, { role: 'user', content: 'hello' },
      { role: 'assistant', content: 'hi' }, { role: 'user', content: 'again' }] });
    outputOf(alone, 'store false with items');
    c.expect(alone.conversation === null, `conversation ${JSON.stringify(alone.conversation)}`);
    const streamed = await next().responses.stream({ input: 'streamed, not kept', store: false,
      previous_response_id: base.id }).finalResponse();
    outputOf(streamed, 'store false streamed');
    c.expect(streamed.store === false, `streamed store ${JSON.stringify(streamed)}`);
    const still = await conversationTexts(base.conversation.id);
    c.expect(JSON.stringify(still) === JSON.stringify(before), `stored ${JSON.stringify(still)}`);
    return { id: r.id };
  },
  async idempotency() {
    const key = `idem-${Date.now()}-${Math.random()}`;
    const headers = { 'Idempotency-Key': key };
    const a = await next().responses.create({ input: 'exactly once' }, { headers });
    const b = await next().responses.create({ input: 'exactly once' }, { headers });
    c.expect(a.id === b.id && a.conversation.id === b.conversation.id && a.output_text === b.output_text,
      `retry ${a.id} ${b.id}`);
    const chained = await next().responses.create({ input: 'next', previous_response_id: a.id },
      { headers: { 'Idempotency-Key': `${key}-2` } });
    const again = await next().responses.create({ input: 'next', previous_response_id: a.id },
      { headers: { 'Idempotency-Key': `${key}-2` } });
    c.expect(chained.id === again.id && chained.conversation.id === a.conversation.id,
      `chained retry ${chained.id} ${again.id} ${again.conversation.id}`);
    const texts = await conversationTexts(a.conversation.id);
    c.expect(texts.length === 4, `once each ${JSON.stringify(texts)}`);
    try {
      await next().responses.create({ input: 'something else' }, { headers });
      throw new Error('unexpected: a reused key with another body was accepted');
    } catch (e) {
      c.expect(e instanceof OpenAI.ConflictError && e.status === 409, `reuse: ${c.errorText ? e.message : e}`);
    }
    return { id: a.id };
  },
  async replay_and_options() {
    const input = [
      { role: 'user', content: 'replayed question' },
      { role: 'assistant', content: 'replayed answer' },
      { role: 'user', content: [{ type: 'input_text', text: 'the real question' }] },
    ];
    const r = await next().responses.create({ input, instructions: 'be kind', metadata: { app: 'sdk' },
      temperature: 0.5, max_output_tokens: 64 });
    outputOf(r, 'replayed');
    const texts = await conversationTexts(r.conversation.id);
    c.expect(texts.length === 4 && texts[0] === 'replayed question' && texts[1] === 'replayed answer' &&
      texts[2] === 'the real question' && texts[3] === r.output_text, `stored ${JSON.stringify(texts)}`);
    const got = await next().responses.retrieve(r.id);
    c.expect(got.instructions === 'be kind' && got.metadata.app === 'sdk' && got.temperature === 0.5 &&
      got.max_output_tokens === 64 && got.output_text === r.output_text,
    `retrieved ${JSON.stringify(got)}`);
    const inputs = [];
    for await (const item of next().responses.inputItems.list(r.id, { order: 'asc' })) inputs.push(textOf(item));
    c.expect(JSON.stringify(inputs) === JSON.stringify(['replayed question', 'replayed answer',
      'the real question']), `input items ${JSON.stringify(inputs)}`);
    // A tool call item is refused, naming it.
    try {
      await next().responses.create({ input: [{ type: 'function_call_output', call_id: 'c1', output: '1' },
        { role: 'user', content: 'x' }], previous_response_id: r.id });
      throw new Error('unexpected: a function_call_output item was accepted');
    } catch (e) {
      c.expect(e instanceof OpenAI.BadRequestError && e.param === 'input[0]', `tool item: ${e.message}`);
    }
    c.expect((await conversationTexts(r.conversation.id)).length === 4, 'nothing written by the refusal');
    return { id: r.id };
  },
  async conversation_idempotency() {
    // The SDK sends no Idempotency-Key of its own (its idempotencyKey
    // option is inert in this client): the header, as for responses.
    const headers = { 'Idempotency-Key': `conv-${Date.now()}-${Math.random()}` };
    const body = { items: [{ role: 'user', content: 'made once' }], metadata: { k: 'v' } };
    const a = await next().conversations.create(body, { headers });
    const b = await next().conversations.create(body, { headers });
    c.expect(a.id === b.id && a.created_at === b.created_at, `retry ${a.id} ${b.id}`);
    c.expect((await conversationTexts(a.id)).length === 1, 'items stored once');
    try {
      await next().conversations.create({ items: [{ role: 'user', content: 'another' }] }, { headers });
      throw new Error('unexpected: a reused key with another body was accepted');
    } catch (e) {
      c.expect(e instanceof OpenAI.ConflictError && e.status === 409, `reuse: ${e.message}`);
    }
    return { id: a.id };
  },
  async responses_isolation() {
    const r = await next().responses.create({ input: 'private' });
    for (const other of others) {
      await expectNotFound(() => other.responses.retrieve(r.id), 'another user retrieves a response');
      await expectNotFound(() => other.responses.inputItems.list(r.id), 'another user lists input items');
      await expectNotFound(() => other.responses.delete(r.id), 'another user deletes a response');
      await expectNotFound(() => other.responses.create({ input: 'x', previous_response_id: r.id }),
        'another user continues a response');
      await expectNotFound(() => other.responses.create({ input: 'x', conversation: r.conversation.id }),
        'another user writes to a conversation');
    }
    await expectNotFound(() => next().responses.retrieve('resp_nope'), 'unknown response');
    const texts = await conversationTexts(r.conversation.id);
    c.expect(texts.length === 2, `untouched ${JSON.stringify(texts)}`);
    return { id: r.id };
  },
  async stream() {
    const base = await next().responses.create({ input: 'before the stream' });
    const order = [];
    const seqs = [];
    let text = '';
    let created = null;
    let completed = null;
    const stream = await next().responses.create({ input: 'stream this please',
      previous_response_id: base.id, stream: true });
    for await (const event of stream) {
      order.push(event.type);
      seqs.push(event.sequence_number);
      if (event.type === 'response.created') created = event.response;
      if (event.type === 'response.output_text.delta') {
        c.expect(event.output_index === 0 && event.content_index === 0 && /^msg_/.test(event.item_id),
          `delta ${JSON.stringify(event)}`);
        text += event.delta;
      }
      if (event.type === 'response.completed') completed = event.response;
    }
    const head = ['response.created', 'response.in_progress', 'response.output_item.added',
      'response.content_part.added'];
    const tail = ['response.output_text.done', 'response.content_part.done',
      'response.output_item.done', 'response.completed'];
    const deltas = order.slice(head.length, order.length - tail.length);
    c.expect(JSON.stringify(order.slice(0, head.length)) === JSON.stringify(head) &&
      JSON.stringify(order.slice(order.length - tail.length)) === JSON.stringify(tail) &&
      deltas.length >= 1 && deltas.every((t) => t === 'response.output_text.delta'),
    `order ${JSON.stringify(order)}`);
    c.expect(seqs.every((s, i) => s === i), `sequence numbers ${JSON.stringify(seqs)}`);
    c.expect(created && completed && created.id === completed.id && created.status === 'in_progress' &&
      completed.status === 'completed' && completed.previous_response_id === base.id &&
      completed.conversation.id === base.conversation.id, `lifecycle ${JSON.stringify([created, completed])}`);
    c.expect(textOf(completed.output[0]) === text && text.length > 0, `text ${JSON.stringify(text)}`);
    const got = await next().responses.retrieve(completed.id);
    c.expect(got.output_text === text, `retrieved ${JSON.stringify(got.output_text)}`);
    // The SDK's stream helper, and an idempotent retry streamed again.
    const headers = { 'Idempotency-Key': `stream-${completed.id}` };
    const helper = next().responses.stream({ input: 'via the helper', previous_response_id: completed.id },
      { headers });
    const final = await helper.finalResponse();
    outputOf(final, 'helper');
    const replay = await next().responses.create({ input: 'via the helper', previous_response_id: completed.id,
      stream: true }, { headers });
    let replayed = null;
    let replayText = '';
    for await (const event of replay) {
      if (event.type === 'response.output_text.delta') replayText += event.delta;
      if (event.type === 'response.completed') replayed = event.response;
    }
    c.expect(replayed && replayed.id === final.id && replayText === final.output_text,
      `replay ${JSON.stringify(replayed)}`);
    const texts = await conversationTexts(base.conversation.id);
    c.expect(texts.length === 6, `stored once ${JSON.stringify(texts)}`);
    return { events: order.length, deltas: deltas.length };
  },
  async kill_start() {
    const client = clients[0];
    const r1 = await client.responses.create({ input: 'before the crash 1', conversation: option('conversation') });
    const r2 = await client.responses.create({ input: 'before the crash 2', previous_response_id: r1.id });
    return { first: r1.id, second: r2.id, texts: [outputOf(r1, 'r1'), outputOf(r2, 'r2')] };
  },
  async kill_continue() {
    const patient = urls.map((u) => new OpenAI({ baseURL: u, apiKey, maxRetries: 8, timeout: 30000 }));
    const prev = option('prev');
    const r3 = await patient[0].responses.create({ input: 'after the crash', previous_response_id: prev },
      { headers: { 'Idempotency-Key': `after-crash-${prev}` } });
    outputOf(r3, 'after the crash');
    c.expect(r3.conversation.id === option('conversation'), `conversation ${JSON.stringify(r3.conversation)}`);
    const texts = [];
    for await (const item of patient[patient.length - 1].conversations.items.list(r3.conversation.id, { order: 'asc' })) {
      texts.push(textOf(item));
    }
    c.expect(texts.length === 6 && texts[0] === 'before the crash 1' && texts[2] === 'before the crash 2' &&
      texts[4] === 'after the crash', `conversation ${JSON.stringify(texts)}`);
    const again = await patient[0].responses.retrieve(prev);
    c.expect(again.id === prev, `retrieve ${JSON.stringify(again)}`);
    return { texts };
  },
  async isolation() {
    const conv = await next().conversations.create({ items: [{ role: 'user', content: 'mine' }] });
    for (const other of others) {
      await expectNotFound(() => other.conversations.retrieve(conv.id), 'another user retrieves');
      await expectNotFound(() => other.conversations.items.list(conv.id), 'another user lists');
      await expectNotFound(() => other.conversations.update(conv.id, { metadata: { a: 'b' } }),
        'another user updates');
      await expectNotFound(() => other.conversations.delete(conv.id), 'another user deletes');
      await expectNotFound(() => other.conversations.items.create(conv.id, {
        items: [{ role: 'user', content: 'intrusion' }],
      }), 'another user appends');
    }
    await expectNotFound(() => next().conversations.retrieve('conv_0123456789abcdef0123456789abcdef'),
      'unknown id');
    await expectNotFound(() => next().conversations.retrieve('resp_nope'), 'not a conversation id');
    const still = await allItems(next(), conv.id);
    c.expect(still.length === 1 && textOf(still[0]) === 'mine', `after others ${JSON.stringify(still)}`);
    return { id: conv.id };
  },
};
if (!process.argv.some((a) => a.startsWith('--only='))) {
  delete scenarios.kill_start;
  delete scenarios.kill_continue;
}
c.run('openai', c.versionOf('openai'), scenarios);
