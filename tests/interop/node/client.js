#!/usr/bin/env node
// A taskstream client that taskstream did not write: kafkajs + avsc, from schemas/ and the
// wire rules of docs/wire-format.md alone. It sends one task event and waits for that task's
// final result.
//
//   node client.js --bootstrap 127.0.0.1:9092 --prefix taskstream --schemas ../../../schemas \
//     --task examples.app.add --args '{"a": 2, "b": 3}' [--queue default] [--key K] \
//     [--timeout 60]
//
// Prints one JSON line: {"id", "task", "status", "attempt", "result", "error", "source",
// "fingerprints"}.
// No compression plugin is registered: kafkajs reads uncompressed and gzip batches only, so
// this fails if the results topic is written with lz4, snappy or zstd.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const zlib = require("zlib");
const avro = require("avsc");
const { Kafka, CompressionTypes, logLevel } = require("kafkajs");

// --- Avro single-object encoding (the Avro specification; docs/wire-format.md) ---

const MARKER = Buffer.from([0xc3, 0x01]);

// CRC-64-AVRO, as in the specification's "Schema Fingerprints" section.
const EMPTY = 0xc15d213aa4d7a795n;
const TABLE = Array.from({ length: 256 }, (_, i) => {
  let fp = BigInt(i);
  for (let j = 0; j < 8; j++) fp = (fp >> 1n) ^ (EMPTY & -(fp & 1n));
  return fp;
});

function crc64avro(text) {
  let fp = EMPTY;
  for (const byte of Buffer.from(text, "utf8")) {
    fp = (fp >> 8n) ^ TABLE[Number((fp ^ BigInt(byte)) & 0xffn)];
  }
  return fp;
}

// The schema's Parsing Canonical Form (avsc's getSchema() without options) and its
// fingerprint as the 8 wire bytes: the 64-bit value, little-endian.
function schemaFile(file) {
  const type = avro.Type.forSchema(JSON.parse(fs.readFileSync(file, "utf8")));
  const canonical = JSON.stringify(type.getSchema());
  const fingerprint = Buffer.alloc(8);
  fingerprint.writeBigUInt64LE(crc64avro(canonical));
  return { type, canonical, fingerprint, header: Buffer.concat([MARKER, fingerprint]) };
}

function encode(schema, datum) {
  return Buffer.concat([schema.header, schema.type.toBuffer(datum)]);
}

function decode(schema, bytes) {
  if (!bytes.subarray(0, 10).equals(schema.header)) {
    throw new Error(`not a ${schema.type.name}: starts ${bytes.subarray(0, 10).toString("hex")}`);
  }
  return schema.type.fromBuffer(bytes.subarray(10));
}

// --- Kafka ---------------------------------------------------------------------------------

// taskstream's producer partitions like librdkafka's default (consistent_random): CRC-32 of
// the key bytes modulo the partition count. kafkajs's own default (murmur2, as Java's) would
// put a key on another partition than taskstream's delay() does, and events sharing a key
// would no longer run in order.
const taskstreamPartitioner = () => ({ partitionMetadata, message }) => {
  const key = Buffer.isBuffer(message.key) ? message.key : Buffer.from(message.key, "utf8");
  return zlib.crc32(key) % partitionMetadata.length;
};

// --- the client ------------------------------------------------------------------------

function options(argv) {
  const out = { queue: "default", key: null, timeout: "60" };
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || argv[i + 1] === undefined) {
      throw new Error(`bad arguments near ${argv[i]}`);
    }
    out[argv[i].slice(2)] = argv[i + 1];
  }
  for (const name of ["bootstrap", "prefix", "schemas", "task", "args"]) {
    if (!out[name]) throw new Error(`--${name} is required`);
  }
  return out;
}

async function main() {
  const opts = options(process.argv.slice(2));
  const dir = opts.schemas;
  const taskEvent = schemaFile(path.join(dir, "task_event.avsc"));
  const resultEvent = schemaFile(path.join(dir, "result_event.avsc"));
  const argsSchema = schemaFile(path.join(dir, "tasks", `${opts.task}.args.avsc`));
  const resultSchema = schemaFile(path.join(dir, "tasks", `${opts.task}.result.avsc`));

  const id = crypto.randomUUID();
  const event = encode(taskEvent, {
    id,
    task: opts.task,
    queue: opts.queue,
    key: opts.key,
    attempt: 1,
    enqueued_at: Date.now() * 1000, // timestamp-micros
    not_before: null,
    args: encode(argsSchema, JSON.parse(opts.args)),
  });

  const kafka = new Kafka({
    clientId: "taskstream-interop-node",
    brokers: opts.bootstrap.split(","),
    logLevel: logLevel.WARN,
    retry: { retries: 5 },
  });
  const deadline = Date.now() + Number(opts.timeout) * 1000;

  // Subscribe before sending, so the result cannot be missed; read from the start since the
  // results topic is compacted by task id and the result may already be there.
  const consumer = kafka.consumer({
    groupId: `${opts.prefix}.interop-node-${id}`,
    sessionTimeout: 6000,
    heartbeatInterval: 1000,
    maxWaitTimeInMs: 50, // some brokers answer a fetch only when its wait is over
  });
  await consumer.connect();
  await consumer.subscribe({ topic: `${opts.prefix}.results`, fromBeginning: true });

  let finish;
  const outcome = new Promise((resolve, reject) => {
    finish = { resolve, reject };
  });
  await consumer.run({
    eachMessage: async ({ message }) => {
      if (message.key === null || message.key.toString("utf8") !== id) return;
      const result = decode(resultEvent, message.value);
      if (result.status !== "SUCCESS" && result.status !== "FAILURE") return; // STARTED, RETRY
      finish.resolve(result);
    },
  });
  consumer.on(consumer.events.CRASH, (e) => finish.reject(e.payload.error));

  // The wire format's key rule: the ordering key when there is one, else the task id. (Not an
  // idempotent producer: the embedded test broker fails kafkajs's InitProducerId request.)
  const producer = kafka.producer({
    allowAutoTopicCreation: false,
    createPartitioner: taskstreamPartitioner,
  });
  await producer.connect();
  await producer.send({
    topic: `${opts.prefix}.tasks.${opts.queue}`,
    acks: -1,
    compression: CompressionTypes.GZIP, // the one codec kafkajs has built in
    messages: [{ key: opts.key ?? id, value: event }],
  });
  await producer.disconnect();

  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no result for ${id} in time`)), deadline - Date.now());
  });
  try {
    const result = await Promise.race([outcome, timeout]);
    process.stdout.write(
      JSON.stringify({
        id: result.id,
        task: result.task,
        status: result.status,
        attempt: result.attempt,
        result: result.result === null ? null : decode(resultSchema, result.result),
        error: result.error,
        source: result.source, // where the worker read the task event
        fingerprints: {
          task_event: taskEvent.fingerprint.toString("hex"),
          result_event: resultEvent.fingerprint.toString("hex"),
        },
      }) + "\n"
    );
  } finally {
    clearTimeout(timer);
    await consumer.disconnect();
  }
}

main().catch((error) => {
  process.stderr.write(`${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
