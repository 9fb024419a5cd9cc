// Independent CID reference: helia's js importer (ipfs-unixfs-importer) with the
// options that reproduce `ipfs add` (v0) and `ipfs add --cid-version 1` (v1).
// Usage: node cid.mjs v0|v1 PATH...   → prints {"PATH": "CID", ...} as JSON.
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { createReadStream, readdirSync, lstatSync, readFileSync } from 'node:fs'
import { basename, join } from 'node:path'

const mode = process.argv[2]
const roots = process.argv.slice(3)
const options = {
  cidVersion: mode === 'v0' ? 0 : 1,
  rawLeaves: mode !== 'v0',
  leafType: 'file',
  chunker: fixedSize({ chunkSize: 262144 }),
  layout: balanced({ maxChildrenPerNode: 174 }),
  reduceSingleLeafToSelf: true,
  wrapWithDirectory: false
}

function * entries (abs, rel) {
  const st = lstatSync(abs)
  if (st.isDirectory()) {
    yield { path: rel }
    const names = readdirSync(abs).sort()
    for (const n of names) yield * entries(join(abs, n), rel + '/' + n)
  } else if (st.size < (1 << 20)) {
    yield { path: rel, content: readFileSync(abs) } // small: no stream per file (fast)
  } else {
    yield { path: rel, content: createReadStream(abs, { highWaterMark: 1 << 20 }) }
  }
}

const out = {}
for (const root of roots) {
  const name = basename(root)
  let cid
  for await (const e of importer(entries(root, name), new MemoryBlockstore(), options)) {
    if (e.path === name) cid = e.cid.toString()
  }
  out[root] = cid
}
process.stdout.write(JSON.stringify(out) + '\n')
