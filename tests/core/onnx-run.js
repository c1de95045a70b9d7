#!/usr/bin/env node
// onnx-run.js: test helper of test-onnx-peers.c. Runs ONNX models in ONNX Runtime
// (onnxruntime-node, CPU, one thread), all in one process so its start is paid once.
//   node onnx-run.js JOBS.json
// JOBS.json is an array of {"model", "input", "dims", "output", "optimized"}: the input
// is raw little-endian float32 of shape dims (batch first), the output is written the
// same way, and "optimized" (may be absent) receives the graph after ONNX Runtime's
// optimizations (where QDQ groups became int8 kernels). Prints one JSON line per job
// with the output's dims. The module is found through NODE_PATH; exit 77 without it.
'use strict';
const fs = require('fs');

let ort;
try {
  ort = require('onnxruntime-node');
} catch (e) {
  console.error('onnxruntime-node is not installed (NODE_PATH=' + (process.env.NODE_PATH || '') + ')');
  process.exit(77);
}

async function run(job) {
  const buf = fs.readFileSync(job.input);
  const x = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
  const n = job.dims.reduce((a, b) => a * b, 1);
  if (x.length !== n) throw new Error(`${job.input}: ${x.length} floats, dims need ${n}`);
  const opts = { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all' };
  if (job.optimized) opts.optimizedModelFilePath = job.optimized;
  const s = await ort.InferenceSession.create(job.model, opts);
  const r = await s.run({ [s.inputNames[0]]: new ort.Tensor('float32', x, job.dims) });
  const y = r[s.outputNames[0]];
  fs.writeFileSync(job.output, Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
  console.log(JSON.stringify({ model: job.model, dims: y.dims.map(Number),
                               input: s.inputNames[0], output: s.outputNames[0] }));
}

async function main() {
  const [jobs] = process.argv.slice(2);
  if (!jobs) {
    console.error('usage: onnx-run.js JOBS.json');
    process.exit(2);
  }
  for (const job of JSON.parse(fs.readFileSync(jobs, 'utf8')))
    await run(job);
}
main().catch(e => { console.error(String(e && e.stack || e)); process.exit(1); });
