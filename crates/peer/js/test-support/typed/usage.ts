// Type-checked by `tsc` (crates/peer/js/tsconfig.json, run by .ci/run), never run: the
// declarations `gotalk gen ts` writes (chat.d.ts) give the calls their types, and wrong calls
// do not compile. Each @ts-expect-error below must be an error, or tsc fails.
import { connect } from '../../gotalk.js';
import { client, ServiceError, type Ack, type ChatError, type Message } from './chat.js';

export async function typedCalls(): Promise<void> {
  const api = client(connect('ws://localhost/gotalk/'));
  const ack: Ack = await api.chat.send({ room: 'lobby', text: 'hi' });
  const id: number = ack.id;
  // @ts-expect-error: `text` is missing
  await api.chat.send({ room: 'lobby' });
  // @ts-expect-error: a number is not a room
  api.chat.history(7);
  for await (const m of api.chat.history('lobby')) {
    const m2: Message = m;
    const from: string | null | undefined = m2.from;
    void from;
  }
  const up = api.chat.upload();
  up.write('bytes as text');
  up.end();
  const total: number = await up.result();
  const shout = api.chat.shout();
  shout.write('line');
  // @ts-expect-error: lines are strings
  shout.write(3);
  api.chat.typing('ana');
  const who: string[] = await api.chat.who();
  const raw: Uint8Array = await api.reverse(new Uint8Array([1]));
  try {
    await api.chat.send({ room: 'attic', text: '' });
  } catch (e) {
    if (e instanceof ServiceError) {
      const error = e.error as ChatError;
      if (error.kind === 'NoSuchRoom') {
        const room: string = error.room;
        void room;
      }
    }
  }
  void [id, total, who, raw];
}
