// A helia node (js-libp2p TCP + Noise + Yamux, @helia/bitswap, in-memory blockstore)
// driven over stdin/stdout by test_bitswap_js_interop.py.
//
// Prints {"event":"ready","peerId":…,"addrs":[…]} once listening, then answers one JSON
// command per stdin line with one JSON line:
//   {"cmd":"dial","addr":"/ip4/…/tcp/…/p2p/12D3…"}        connect to a peer
//   {"cmd":"add","path":…,"cidVersion":1,"rawLeaves":true}  import a file → {"cid":…}
//   {"cmd":"cat","cid":…,"out":…,"timeoutMs":…}             fetch by CID (bitswap) into `out`
//   {"cmd":"stop"}                                           shut down and exit 0
// Every error becomes {"ok":false,"error":…}; the process never exits on one.
// No routers and no DHT: bitswap asks the peers it is connected to, so every block
// a `cat` gets came over Bitswap from the Colony daemon.

// Node 20 lacks Promise.withResolvers (added in node 22), which js-libp2p 3.x uses.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createHeliaLight } = await import('helia')
const { withLibp2pLight } = await import('@helia/libp2p')
const { withBitswap } = await import('@helia/bitswap')
const { unixfs } = await import('@helia/unixfs')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@libp2p/noise')
const { yamux } = await import('@libp2p/yamux')
const { identify } = await import('@libp2p/identify')
const { multiaddr } = await import('@multiformats/multiaddr')
const { MemoryBlockstore } = await import('blockstore-core')
const { MemoryDatastore } = await import('datastore-core')
const { CID } = await import('multiformats/cid')
const fs = await import('node:fs/promises')
const readline = await import('node:readline')

const helia = withBitswap(withLibp2pLight(createHeliaLight({
  blockstore: new MemoryBlockstore(),
  datastore: new MemoryDatastore()
}), {
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify() }
}))
await helia.start()
const ufs = unixfs(helia)

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

async function handle (line) {
  const msg = JSON.parse(line)
  if (msg.cmd === 'dial') {
    const conn = await helia.libp2p.dial(multiaddr(msg.addr))
    return { peer: conn.remotePeer.toString() }
  }
  if (msg.cmd === 'add') {
    const bytes = await fs.readFile(msg.path)
    const cid = await ufs.addBytes(bytes, {
      cidVersion: msg.cidVersion ?? 1, rawLeaves: msg.rawLeaves ?? true
    })
    return { cid: cid.toString() }
  }
  if (msg.cmd === 'cat') {
    const chunks = []
    const signal = AbortSignal.timeout(msg.timeoutMs ?? 30000)
    for await (const buf of ufs.cat(CID.parse(msg.cid), { signal })) {
      chunks.push(buf)
    }
    await fs.writeFile(msg.out, Buffer.concat(chunks))
    return { bytes: chunks.reduce((n, b) => n + b.length, 0) }
  }
  if (msg.cmd === 'stop') {
    await helia.stop()
    out({ ok: true })
    process.exit(0)
  }
  throw new Error(`unknown command ${msg.cmd}`)
}

out({
  event: 'ready',
  peerId: helia.libp2p.peerId.toString(),
  addrs: helia.libp2p.getMultiaddrs().map((a) => a.toString())
})

const rl = readline.createInterface({ input: process.stdin })
for await (const line of rl) {
  try {
    out({ ok: true, ...(await handle(line)) })
  } catch (e) {
    out({ ok: false, error: String(e?.stack ?? e) })
  }
}
