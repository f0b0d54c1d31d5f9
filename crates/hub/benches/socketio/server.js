// The Socket.IO side of crates/hub/benches/fanout.rs: the same load shape
// as the gotalk hub's server role.
//
// - A client joins a room with `emit("join", room, ack)`; the ack says the
//   room is joined (the gotalk side answers its `subscribe` request then).
// - The publisher sends `emit("publish", room, data, ack)`; the server
//   broadcasts `io.to(room).emit("m", data)` and then acks, like the hub
//   answering a `publish` request once the publication is handed on.
// - With REDIS_URL, the rooms span every node through the Redis adapter
//   (@socket.io/redis-adapter with node-redis), like RedisBroker.
//
// Listens on 127.0.0.1:PORT (0 picks one) and prints
// `url ws://127.0.0.1:PORT/socket.io/?EIO=4&transport=websocket`, then
// `pid PID`; exits when its stdin closes.
//
// Run: node server.js  (PORT, REDIS_URL optional)

"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

async function main() {
  const port = Number(process.env.PORT || 0);
  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    // Both sides serve WebSocket only; the clients open with the
    // websocket transport directly (no long-polling handshake).
    transports: ["websocket"],
    // Socket.IO's default, spelled out: no per-message compression (the
    // gotalk side has none either).
    perMessageDeflate: false,
  });

  let clients = [];
  if (process.env.REDIS_URL) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: process.env.REDIS_URL });
    const sub = pub.duplicate();
    pub.on("error", (e) => console.error("redis pub:", e.message));
    sub.on("error", (e) => console.error("redis sub:", e.message));
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
    clients = [pub, sub];
  }

  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (typeof ack === "function") ack();
    });
    socket.on("publish", (room, data, ack) => {
      io.to(room).emit("m", data);
      if (typeof ack === "function") ack();
    });
  });

  await new Promise((resolve) => httpServer.listen(port, "127.0.0.1", resolve));
  const actual = httpServer.address().port;
  process.stdout.write(
    `url ws://127.0.0.1:${actual}/socket.io/?EIO=4&transport=websocket\npid ${process.pid}\n`,
  );

  const stop = async () => {
    io.close();
    await Promise.all(clients.map((c) => c.quit().catch(() => {})));
    process.exit(0);
  };
  process.stdin.on("end", stop);
  process.stdin.on("close", stop);
  process.stdin.resume();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
