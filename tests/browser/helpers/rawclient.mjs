// A bare protocol client (the `ws` package; Node 20 has no global WebSocket) for messages a browser
// would never build: GnuPG-made payloads, replays, payloads signed by a stranger.
import WebSocket from 'ws';

export class RawClient {
  constructor(socket) {
    this.socket = socket;
    this.frames = [];
    this.waiters = [];
    this.id = null;
    socket.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      this.frames.push(frame);
      this.waiters = this.waiters.filter((waiter) => !waiter.test(frame) || (waiter.resolve(frame), false));
    });
  }

  /** Opens /ws and sends CONNECT; resolves once the session exists. */
  static async connect(wsUrl) {
    const socket = new WebSocket(wsUrl);
    await new Promise((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('error', reject);
    });
    const client = new RawClient(socket);
    client.send({ type: 'CONNECT' });
    const reply = await client.next((frame) => frame.type === 'CONNECT');
    client.id = reply.id;
    return client;
  }

  send(frame) {
    this.socket.send(JSON.stringify(frame));
  }

  /** The first frame (already received or still to come) matching `test`. */
  next(test, timeoutMs = 10000) {
    const seen = this.frames.find(test);
    if (seen) {
      this.frames.splice(this.frames.indexOf(seen), 1);
      return Promise.resolve(seen);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for a frame')), timeoutMs);
      this.waiters.push({
        test,
        resolve: (frame) => {
          clearTimeout(timer);
          this.frames.splice(this.frames.indexOf(frame), 1);
          resolve(frame);
        },
      });
    });
  }

  /** Sends a request with a ref and waits for its ACK (rejects on ERROR). */
  async request(frame, ref) {
    this.send({ ...frame, ref });
    const reply = await this.next((f) => (f.type === 'ACK' || f.type === 'ERROR') && f.ref === ref);
    if (reply.type === 'ERROR') throw new Error(`server answered ERROR ${reply.code}`);
    return reply;
  }

  close() {
    this.socket.close();
  }
}
