#!/usr/bin/env node
// CheckEligibility and OpenEntry from the command line, like the Python `aftersales check|open`:
// the response as JSON on stdout, or a refusal's status and decoded details as JSON on stderr
// (exit 1).
//
//   node cli.js [--address HOST:PORT] [--token TOKEN] check ORDER_ID [OPERATOR_ID]
//   node cli.js [--address HOST:PORT] [--token TOKEN] open ORDER_ID [OPERATOR_ID] [--note TEXT]
//                                                         [--request-id ID]
'use strict';

const crypto = require('node:crypto');
const { parseArgs } = require('node:util');
const { createClient, richError } = require('./aftersales');

const USAGE = 'usage: cli.js [--address HOST:PORT] [--token TOKEN] check|open ORDER_ID [OPERATOR_ID]';

function call(stub, method, request, deadlineSeconds) {
  const deadline = new Date(Date.now() + deadlineSeconds * 1000);
  return new Promise((resolve, reject) => {
    stub[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

async function main(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      address: { type: 'string', default: '127.0.0.1:50051' },
      token: { type: 'string' },
      note: { type: 'string', default: '' },
      'request-id': { type: 'string' },
      timeout: { type: 'string', default: '10' },
    },
  });
  const [command, orderId, operatorId = ''] = positionals;
  if (!['check', 'open'].includes(command) || orderId === undefined) {
    console.error(USAGE);
    return 2;
  }
  const client = createClient(values.address, { token: values.token });
  try {
    const response =
      command === 'check'
        ? await call(client.entry, 'CheckEligibility', { order_id: orderId, operator_id: operatorId }, Number(values.timeout))
        : await call(
            client.entry,
            'OpenEntry',
            {
              order_id: orderId,
              operator_id: operatorId,
              note: values.note,
              request_id: values['request-id'] || crypto.randomUUID(),
            },
            Number(values.timeout),
          );
    console.log(JSON.stringify(response, null, 2));
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
