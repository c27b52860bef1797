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

function call(stub, method, request, deadlineSeconds) {
  const deadline = new Date(Date.now() + deadlineSeconds * 1000);
  return new Promise((resolve, reject) => {
    stub[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
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
  const read = (file) => (file ? fs.readFileSync(file) : undefined);
  const client = createClient(values.address, {
    token: values.token,
    rootCerts: read(values['tls-ca']),
    certChain: read(values['tls-cert']),
    privateKey: read(values['tls-key']),
  });
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
    const response = await call(client.entry, method, request, Number(values.timeout));
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
