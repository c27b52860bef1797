#!/usr/bin/env node
// CheckEligibility and OpenEntry from the command line, like the Python `aftersales check|open`:
// the response as JSON on stdout, or a refusal's status and decoded details as JSON on stderr
// (exit 1).
//
//   node cli.js [--address HOST:PORT] [--token TOKEN] check ORDER_ID [OPERATOR_ID]
//   node cli.js [--address HOST:PORT] [--token TOKEN] open ORDER_ID [OPERATOR_ID] [--note TEXT]
//                                                         [--request-id ID]
//
// With --tls-ca (and the caller's --tls-cert and --tls-key) the channel is TLS (the secure mode).
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const { parseArgs } = require('node:util');
const { createClient, richError, responseJson } = require('./aftersales');

const USAGE = [
  'usage: cli.js [--address HOST:PORT] [--token TOKEN] [--timeout SECONDS]',
  '              [--tls-ca PEM [--tls-cert PEM --tls-key PEM]]',
  '              check|open ORDER_ID [OPERATOR_ID] [--note TEXT] [--request-id ID]',
].join('\n');

const OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  address: { type: 'string', default: '127.0.0.1:50051' },
  token: { type: 'string' },
  note: { type: 'string', default: '' },
  'request-id': { type: 'string' },
  timeout: { type: 'string', default: '10' },
  'tls-ca': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
};

// A command line that cannot be run as given: its message on stderr, exit 2.
class UsageError extends Error {}

// Seconds above zero and finite: a bad --timeout is the command line's fault (exit 2), not a
// deadline the server missed.
function seconds(option, text) {
  const value = text.trim() === '' ? Number.NaN : Number(text);
  if (Number.isNaN(value)) throw new UsageError(`${option}: not a number of seconds: '${text}'`);
  if (!(value > 0 && Number.isFinite(value))) {
    throw new UsageError(`${option}: must be above zero and finite, not ${text}`);
  }
  return value;
}

// The contents of the file an option names (undefined without one); an unreadable one is a bad
// command line, said in one line.
function contentsOf(option, file) {
  if (file === undefined) return undefined;
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const reason = err.code === 'EISDIR' ? 'it is a folder' : err.message.replace(/^[A-Z]+: /, '').replace(/,.*$/, '');
    throw new UsageError(`cannot read ${option} ${file}: ${reason}`);
  }
}

function call(stub, method, request, deadlineSeconds) {
  // A deadline past what a Date holds is no deadline.
  const end = Date.now() + deadlineSeconds * 1000;
  const deadline = end < 8.64e15 ? new Date(end) : Infinity;
  return new Promise((resolve, reject) => {
    stub[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

// The client of the options: TLS with --tls-ca, and the caller's own certificate with both
// --tls-cert and --tls-key.
function connect(values) {
  if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined)) {
    throw new UsageError('--tls-cert and --tls-key go together: the certificate and its key');
  }
  const tls = {
    rootCerts: contentsOf('--tls-ca', values['tls-ca']),
    certChain: contentsOf('--tls-cert', values['tls-cert']),
    privateKey: contentsOf('--tls-key', values['tls-key']),
  };
  try {
    return createClient(values.address, { token: values.token, ...tls });
  } catch (err) {
    // Files that are no PEM certificate or key, or a key that is not the certificate's.
    throw new UsageError(`the TLS files are not usable: ${err.message}`);
  }
}

async function main(argv) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
  } catch (err) {
    console.error(`${err.message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const [command, orderId, operatorId = ''] = positionals;
  if (!['check', 'open'].includes(command) || orderId === undefined) {
    console.error(USAGE);
    return 2;
  }
  let client;
  let timeout;
  try {
    timeout = seconds('--timeout', values.timeout);
    client = connect(values);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`cli.js: ${err.message}`);
    return 2;
  }
  const [method, request] =
    command === 'check'
      ? ['CheckEligibility', { order_id: orderId, operator_id: operatorId }]
      : [
          'OpenEntry',
          {
            order_id: orderId,
            operator_id: operatorId,
            note: values.note,
            request_id: values['request-id'] || crypto.randomUUID(),
          },
        ];
  try {
    const response = await call(client.entry, method, request, timeout);
    console.log(JSON.stringify(responseJson('AfterSalesEntry', method, response), null, 2));
    return 0;
  } catch (err) {
    if (err.code === undefined) throw err;
    console.error(JSON.stringify(richError(err), null, 2));
    return 1;
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(err);
    process.exitCode = 3;
  },
);
