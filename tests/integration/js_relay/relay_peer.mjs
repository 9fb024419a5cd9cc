// A js-libp2p peer with circuit relay v2 (client transport, optionally the relay
// server) and DCUtR, driven over stdin/stdout by test_relay_v2_js_interop.py.
//
// argv[2] is a JSON object: {"listen": [multiaddr…], "relayServer": bool,
// "announce": [multiaddr…], "quic": bool}. With "quic", the node also runs
// @chainsafe/libp2p-quic (rust-libp2p's QUIC through napi: quinn + rustls with
// the libp2p TLS extension), so /udp/…/quic-v1 addresses listen and dial. A
// listen address ending in /p2p-circuit makes a
// reservation on that relay. Prints {"event":"ready","peerId":…,"addrs":[…]} once
// listening (and, with a /p2p-circuit listen address, once the reservation holds),
// then answers one JSON command per stdin line with one JSON line:
//   {"cmd":"dial_ping","addr":"…"}       dial (a /p2p-circuit address goes through
//                                         the relay), ping on that connection
//   {"cmd":"dial_echo","addr":"…","protocol":"…","bytes":N}
//                                         dial, send N random bytes on a new stream of
//                                         that protocol, close writing, read the echo
//                                         back and compare (sha256)
//   {"cmd":"connections","peerId":"…"}   our connections to that peer
//   {"cmd":"relay_stats"}                the relay server's reservations
//   {"cmd":"stop"}                       shut down and exit 0
// Every error becomes {"ok":false,"error":"during <step>, <ms> into it: …"}; the process
// never exits on one.

// Node 20 lacks Promise.withResolvers (added in node 22), which js-libp2p 3.x uses.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { dcutr } = await import('@libp2p/dcutr')
const { circuitRelayTransport, circuitRelayServer } = await import('@libp2p/circuit-relay-v2')
const { multiaddr } = await import('@multiformats/multiaddr')
const readline = await import('node:readline')
const { createHash, randomBytes } = await import('node:crypto')

const opts = JSON.parse(process.argv[2] ?? '{}')
const services = { identify: identify(), ping: ping(), dcutr: dcutr() }
if (opts.relayServer) {
  services.relay = circuitRelayServer({ reservations: { maxReservations: 16 } })
}
const transports = [tcp(), circuitRelayTransport()]
if (opts.quic) {
  // Imported only when asked: the other tests do not depend on its native module.
  const { quic } = await import('@chainsafe/libp2p-quic')
  // 15 s for a handshake, not its 5 s: on a loaded 2-core CI machine (the suite's other
  // worker starting daemons) one dial of ours timed out once; our side allows 10 s.
  transports.push(quic({ handshakeTimeout: 15_000 }))
}
const node = await createLibp2p({
  addresses: { listen: opts.listen ?? ['/ip4/127.0.0.1/tcp/0'], announce: opts.announce ?? [] },
  // The commands' own 20 s bound the dials, not js-libp2p's 6 s per address.
  connectionManager: { dialTimeout: 20_000, addressDialTimeout: 20_000 },
  transports,
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services
})

// /test/echo/1.0.0 (as tests/integration/edge_stack.py): every byte back, then close.
await node.handle('/test/echo/1.0.0', async (stream) => {
  for await (const buf of stream) {
    if (!stream.send(buf)) await stream.onDrain()
  }
  await stream.close()
}, { runOnLimitedConnection: true })

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function describe (c) {
  return {
    remoteAddr: c.remoteAddr.toString(),
    direction: c.direction,
    status: c.status,
    limited: c.limits != null
  }
}

async function pingOn (conn) {
  const stream = await conn.newStream('/ipfs/ping/1.0.0', { runOnLimitedConnection: true })
  const payload = crypto.getRandomValues(new Uint8Array(32))
  const started = Date.now()
  const got = []
  let n = 0
  const done = new Promise((resolve, reject) => {
    stream.addEventListener('message', (evt) => {
      const chunk = evt.data.subarray()
      got.push(chunk)
      n += chunk.byteLength
      if (n >= 32) resolve()
    })
    stream.addEventListener('close', () => (n >= 32 ? resolve() : reject(new Error('closed'))))
  })
  stream.send(payload)
  await done
  const echoed = Buffer.concat(got).subarray(0, 32)
  if (!echoed.equals(Buffer.from(payload))) throw new Error('ping payload mismatch')
  await stream.close()
  return Date.now() - started
}

async function echoOn (conn, protocol, bytes) {
  const stream = await conn.newStream(protocol, { runOnLimitedConnection: true })
  const payload = randomBytes(bytes)
  const got = createHash('sha256')
  let n = 0
  const done = new Promise((resolve, reject) => {
    stream.addEventListener('message', (evt) => {
      const chunk = evt.data.subarray()
      got.update(chunk)
      n += chunk.byteLength
    })
    stream.addEventListener('remoteCloseWrite', () => resolve())
    stream.addEventListener('close', () => (n >= bytes ? resolve() : reject(new Error(`closed after ${n} of ${bytes} bytes`))))
  })
  const started = Date.now()
  for (let off = 0; off < bytes; off += 65536) {
    if (!stream.send(payload.subarray(off, off + 65536))) await stream.onDrain()
  }
  await stream.close()
  await done
  const ms = Date.now() - started
  const same = got.digest('hex') === createHash('sha256').update(payload).digest('hex')
  return { echoed: n, same, ms }
}

// What a command is doing, so a failure says which step and how far into it
// (a timeout's own stack names only node's timer).
let step = 'idle'
let stepStarted = Date.now()
function at (name) {
  step = name
  stepStarted = Date.now()
}

async function handle (line) {
  const msg = JSON.parse(line)
  if (msg.cmd === 'dial_ping') {
    at('dial')
    const conn = await node.dial(multiaddr(msg.addr), { signal: AbortSignal.timeout(20000) })
    // Ping on *this* connection: ping(peerId) would open another one, since
    // js-libp2p prefers dialling anew to reusing a limited (relayed) connection.
    at('ping')
    const rttMs = await pingOn(conn)
    return { ok: true, remotePeer: conn.remotePeer.toString(), rttMs, conn: describe(conn) }
  }
  if (msg.cmd === 'dial_echo') {
    at('dial')
    const conn = await node.dial(multiaddr(msg.addr), { signal: AbortSignal.timeout(20000) })
    at('echo')
    const r = await echoOn(conn, msg.protocol, msg.bytes)
    return { ok: true, remotePeer: conn.remotePeer.toString(), conn: describe(conn), ...r }
  }
  if (msg.cmd === 'connections') {
    const conns = node.getConnections().filter((c) => c.remotePeer.toString() === msg.peerId)
    return { ok: true, connections: conns.map(describe) }
  }
  if (msg.cmd === 'relay_stats') {
    return { ok: true, reservations: node.services.relay.reservations.size }
  }
  if (msg.cmd === 'stop') {
    await node.stop()
    out({ ok: true })
    process.exit(0)
  }
  throw new Error(`unknown command ${msg.cmd}`)
}

// With a /p2p-circuit listen address, wait (bounded) for the relayed address.
const wantsCircuit = (opts.listen ?? []).some((a) => a.endsWith('/p2p-circuit'))
for (let i = 0; wantsCircuit && i < 200; i++) {
  if (node.getMultiaddrs().some((a) => a.toString().includes('/p2p-circuit'))) break
  await sleep(50)
}
out({
  event: 'ready',
  peerId: node.peerId.toString(),
  addrs: node.getMultiaddrs().map((a) => a.toString())
})

const rl = readline.createInterface({ input: process.stdin })
for await (const line of rl) {
  if (line.trim() === '') continue
  try {
    at('command')
    out(await handle(line))
  } catch (e) {
    const where = `during ${step}, ${Date.now() - stepStarted} ms into it: `
    out({ ok: false, error: where + String(e && e.stack ? e.stack : e) })
  }
}
await node.stop()
