// The checks of the generated client (chat.js), shared by node (run-client.mjs) and Chromium
// (the page of crates/cli/tests/gen_ts.rs): every kind of operation of the Rust service there,
// and its typed error as a ServiceError. Resolves with the number of checks passed; rejects with
// the first mismatch.
export async function runChecks(api, ServiceError) {
  let passed = 0;
  const equal = (what, got, want) => {
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    }
  };
  const check = async (what, fn) => {
    try {
      await fn();
      passed++;
    } catch (e) {
      throw new Error(`${what}: ${e?.stack ?? e}`);
    }
  };
  const failure = (p) => p.then(() => null, (e) => e);

  await check('single JSON call', async () => {
    equal('ack', await api.chat.send({ room: 'lobby', text: 'hi', from: null }), { id: 1 });
  });
  await check('typed error', async () => {
    const e = await failure(api.chat.send({ room: 'attic', text: 'x' }));
    if (!(e instanceof ServiceError)) throw new Error(`not a ServiceError: ${e}`);
    equal('op', e.op, 'chat.send');
    equal('error', e.error, { kind: 'NoSuchRoom', room: 'attic' });
    equal('message', e.message, 'no room called "attic"');
  });
  await check('streamed result, then a typed error', async () => {
    const got = [];
    for await (const m of api.chat.history('lobby')) got.push(m.text);
    equal('history', got, ['hi']);
    const e = await failure((async () => {
      for await (const _ of api.chat.history('attic'));
    })());
    if (!(e instanceof ServiceError) || e.error.kind !== 'NoSuchRoom') throw new Error(`${e}`);
  });
  await check('stream request, single result', async () => {
    const up = api.chat.upload();
    up.write('abc');
    up.write(new Uint8Array([1, 2]));
    up.end();
    equal('bytes', await up.result(), 5);
  });
  await check('stream in, stream out', async () => {
    const s = api.chat.shout();
    s.write('a');
    s.write('b');
    s.end();
    const got = [];
    for await (const line of s.results()) got.push(line);
    equal('lines', got, ['A', 'B']);
  });
  await check('notification, then a call without input', async () => {
    api.chat.typing('ana');
    equal('who', await api.chat.who(), ['ana']);
  });
  await check('raw bytes', async () => {
    equal('reversed', new TextDecoder().decode(await api.reverse('abc')), 'cba');
  });
  return passed;
}
