import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseFlags, parseGoBool, parseGoInt, usage, type FlagDef } from '../../src/flags.js';

const defs = [
  { name: 'debug', kind: 'bool', default: false, usage: 'debug logging' },
  { name: 'iptables', kind: 'bool', default: true, usage: 'scan rules' },
  { name: 'addr', kind: 'string', default: '127.0.0.1:3040', usage: 'peer address' },
  { name: 'url', kind: 'string', default: '', usage: 'expose API `URL`' },
  { name: 'port', kind: 'int', default: 6443, usage: 'API port' },
  { name: 'count', kind: 'int', default: 0, usage: 'how many' },
] as const satisfies readonly FlagDef[];

function ok(argv: string[]) {
  const r = parseFlags(defs, argv);
  if (!r.ok) assert.fail(`expected ${JSON.stringify(argv)} to parse, got ${JSON.stringify(r)}`);
  return r;
}

function error(argv: string[]): string {
  const r = parseFlags(defs, argv);
  if (r.ok || r.error === undefined) return assert.fail(`expected an error, got ${JSON.stringify(r)}`);
  return r.error;
}

describe('parseFlags', () => {
  test('no arguments: every default, nothing explicit, no positionals', () => {
    const r = ok([]);
    assert.deepEqual(r.values, { debug: false, iptables: true, addr: '127.0.0.1:3040', url: '', port: 6443, count: 0 });
    assert.deepEqual([...r.explicit], []);
    assert.deepEqual(r.positional, []);
  });

  test('values are typed per kind', () => {
    const r = ok(['-port', '80', '-addr', 'x:1', '-debug']);
    const port: number = r.values.port;
    const addr: string = r.values.addr;
    const debug: boolean = r.values.debug;
    assert.equal(port, 80);
    assert.equal(addr, 'x:1');
    assert.equal(debug, true);
  });

  test('-name and --name are the same', () => {
    assert.equal(ok(['-debug']).values.debug, true);
    assert.equal(ok(['--debug']).values.debug, true);
    assert.equal(ok(['--addr', 'h:1']).values.addr, 'h:1');
    assert.equal(ok(['--addr=h:2']).values.addr, 'h:2');
  });

  test('non-bools take -name=value or -name value', () => {
    assert.equal(ok(['-addr=10.0.0.1:99']).values.addr, '10.0.0.1:99');
    assert.equal(ok(['-addr', '10.0.0.1:99']).values.addr, '10.0.0.1:99');
    assert.equal(ok(['-port=8443']).values.port, 8443);
    assert.equal(ok(['-port', '8443']).values.port, 8443);
  });

  test('only the first = splits name from value', () => {
    assert.equal(ok(['-url=http://h/?a=b']).values.url, 'http://h/?a=b');
  });

  test('an empty inline value is a value', () => {
    const r = ok(['-addr=']);
    assert.equal(r.values.addr, '');
    assert.ok(r.explicit.has('addr'));
  });

  test('a non-bool takes the next argument even if it looks like a flag', () => {
    const r = ok(['-addr', '-debug']);
    assert.equal(r.values.addr, '-debug');
    assert.equal(r.values.debug, false);
    assert.equal(ok(['-addr', '--']).values.addr, '--');
  });

  test('a bool alone is true', () => {
    assert.equal(ok(['-debug']).values.debug, true);
  });

  for (const [word, value] of [
    ['true', true], ['TRUE', true], ['True', true], ['t', true], ['T', true], ['1', true],
    ['false', false], ['FALSE', false], ['False', false], ['f', false], ['F', false], ['0', false],
  ] as const) {
    test(`a bool accepts -name=${word}`, () => {
      assert.equal(ok([`-debug=${word}`]).values.debug, value);
      assert.equal(ok([`-iptables=${word}`]).values.iptables, value);
    });
  }

  for (const word of ['yes', 'no', 'on', 'tRUE', 'fAlse', '', ' true', '2']) {
    test(`a bool rejects -name=${JSON.stringify(word)}`, () => {
      assert.equal(error([`-debug=${word}`]), `invalid boolean value ${JSON.stringify(word)} for -debug: parse error`);
    });
  }

  test('a bool never takes the next argument: -name false leaves false positional and stops', () => {
    const r = ok(['-iptables', 'false', '-debug']);
    assert.equal(r.values.iptables, true);
    assert.equal(r.values.debug, false);
    assert.deepEqual(r.positional, ['false', '-debug']);
    assert.deepEqual([...r.explicit], ['iptables']);
  });

  test('-iptables=false turns off a bool that defaults to true', () => {
    assert.equal(ok(['-iptables=false']).values.iptables, false);
    assert.equal(ok(['--iptables=0']).values.iptables, false);
  });

  test('parsing stops at the first non-flag argument', () => {
    const r = ok(['-debug', 'run', '-port', '1']);
    assert.equal(r.values.debug, true);
    assert.equal(r.values.port, 6443);
    assert.deepEqual(r.positional, ['run', '-port', '1']);
  });

  test('parsing stops after --, which is dropped', () => {
    const r = ok(['-debug', '--', '-port', '1']);
    assert.equal(r.values.port, 6443);
    assert.deepEqual(r.positional, ['-port', '1']);
    assert.deepEqual(ok(['--']).positional, []);
    assert.deepEqual(ok(['--', '--']).positional, ['--']);
  });

  test('a lone - is positional', () => {
    const r = ok(['-', '-debug']);
    assert.equal(r.values.debug, false);
    assert.deepEqual(r.positional, ['-', '-debug']);
  });

  test('an empty argument is positional', () => {
    assert.deepEqual(ok(['', '-debug']).positional, ['', '-debug']);
  });

  test('the last occurrence of a flag wins', () => {
    assert.equal(ok(['-port', '1', '-port=2']).values.port, 2);
    assert.equal(ok(['-debug', '-debug=false']).values.debug, false);
  });

  test('explicit names exactly the flags given, even when given their default', () => {
    const r = ok(['-iptables=true', '--port', '6443', '-addr=x:1']);
    assert.deepEqual([...r.explicit].sort(), ['addr', 'iptables', 'port']);
  });

  test('an unknown flag is an error naming it, with one dash like Go', () => {
    assert.equal(error(['-foo']), 'flag provided but not defined: -foo');
    assert.equal(error(['--foo=1']), 'flag provided but not defined: -foo');
    assert.equal(error(['-debug', '-nope', 'x']), 'flag provided but not defined: -nope');
  });

  test('flag names are case-sensitive', () => {
    assert.equal(error(['-Debug']), 'flag provided but not defined: -Debug');
  });

  test('a non-bool at the end without a value needs an argument', () => {
    assert.equal(error(['-addr']), 'flag needs an argument: -addr');
    assert.equal(error(['-debug', '--port']), 'flag needs an argument: -port');
  });

  test('bad flag syntax', () => {
    assert.equal(error(['---debug']), 'bad flag syntax: ---debug');
    assert.equal(error(['-=x']), 'bad flag syntax: -=x');
    assert.equal(error(['--=x']), 'bad flag syntax: --=x');
  });

  test('an int that does not parse names the value and the flag', () => {
    assert.equal(error(['-port', 'x']), 'invalid value "x" for flag -port: parse error');
    assert.equal(error(['-port=']), 'invalid value "" for flag -port: parse error');
    assert.equal(error(['-port=1.5']), 'invalid value "1.5" for flag -port: parse error');
    assert.equal(error(['-port', ' 80']), 'invalid value " 80" for flag -port: parse error');
  });

  test('an int out of the int64 range', () => {
    assert.equal(error(['-port=9223372036854775808']), 'invalid value "9223372036854775808" for flag -port: value out of range');
  });

  test('errors stop parsing: the first bad flag is reported', () => {
    assert.equal(error(['-port=x', '-foo']), 'invalid value "x" for flag -port: parse error');
  });

  for (const h of ['-h', '-help', '--help', '--h', '-help=1']) {
    test(`${h} asks for help`, () => {
      assert.deepEqual(parseFlags(defs, [h]), { ok: false, help: true });
      assert.deepEqual(parseFlags(defs, ['-debug', h, '-foo']), { ok: false, help: true });
    });
  }

  test('help after a positional is just a positional', () => {
    assert.deepEqual(ok(['x', '-h']).positional, ['x', '-h']);
  });

  test('a table that defines -h gets the flag, not help', () => {
    const withH = [{ name: 'h', kind: 'bool', default: false, usage: 'mine' }] as const satisfies readonly FlagDef[];
    const r = parseFlags(withH, ['-h']);
    assert.ok(r.ok);
    assert.equal(r.values.h, true);
  });

  test('the result does not share state between calls', () => {
    ok(['-port', '1', '-debug']);
    const r = ok([]);
    assert.equal(r.values.port, 6443);
    assert.equal(r.values.debug, false);
    assert.equal(r.explicit.size, 0);
  });
});

describe('parseGoInt (strconv.ParseInt base 0)', () => {
  for (const [s, n] of [
    ['0', 0], ['42', 42], ['+42', 42], ['-42', -42], ['0x1F', 31], ['0X1f', 31], ['0o17', 15], ['0O17', 15],
    ['017', 15], ['0b101', 5], ['0B101', 5], ['1_000', 1000], ['0x_ff', 255], ['-0', 0],
    // The int64 extremes are in range (as JS numbers they round to ±2^63).
    ['9223372036854775807', Number(2n ** 63n - 1n)], ['-9223372036854775808', -Number(2n ** 63n)],
  ] as const) {
    test(`${s} is ${String(n)}`, () => {
      assert.deepEqual(parseGoInt(s), { value: n });
    });
  }

  for (const s of ['', '-', '+', 'x', '0x', '0b', '08', '0b2', '0o8', '1e3', '1.0', '_1', '1_', '1__0', '0_x1', ' 1', '1 ', '--1', '\u212a']) {
    test(`${JSON.stringify(s)} is a parse error`, () => {
      assert.deepEqual(parseGoInt(s), { error: 'parse error' });
    });
  }

  for (const s of ['9223372036854775808', '-9223372036854775809', '0xffffffffffffffffff']) {
    test(`${s} is out of range`, () => {
      assert.deepEqual(parseGoInt(s), { error: 'value out of range' });
    });
  }
});

describe('parseGoBool (strconv.ParseBool)', () => {
  test('accepts exactly Go\'s set', () => {
    for (const s of ['1', 't', 'T', 'TRUE', 'true', 'True']) assert.equal(parseGoBool(s), true, s);
    for (const s of ['0', 'f', 'F', 'FALSE', 'false', 'False']) assert.equal(parseGoBool(s), false, s);
    for (const s of ['', 'yes', 'y', 'on', 'off', 'tRue', 'FaLse', '01']) assert.equal(parseGoBool(s), undefined, s);
  });
});

describe('usage', () => {
  test('Go PrintDefaults layout: sorted, type names, defaults only when not zero', () => {
    assert.equal(
      usage(defs),
      [
        'Usage of portstream:',
        '  -addr string',
        '    \tpeer address (default "127.0.0.1:3040")',
        '  -count int',
        '    \thow many',
        '  -debug',
        '    \tdebug logging',
        '  -iptables',
        '    \tscan rules (default true)',
        '  -port int',
        '    \tAPI port (default 6443)',
        '  -url URL',
        '    \texpose API URL',
        '',
      ].join('\n'),
    );
  });

  test('sorts by byte order (upper case before lower case), and takes the program name', () => {
    const mixed = [
      { name: 'k8sServiceListenerAddr', kind: 'string', default: '', usage: 's' },
      { name: 'k8sAPIPort', kind: 'int', default: 0, usage: 'p' },
    ] as const satisfies readonly FlagDef[];
    assert.equal(usage(mixed, 'x'), 'Usage of x:\n  -k8sAPIPort int\n    \tp\n  -k8sServiceListenerAddr string\n    \ts\n');
  });

  test('a one-letter bool has its usage on the same line; multi-line usage is indented', () => {
    const short = [
      { name: 'v', kind: 'bool', default: false, usage: 'verbose' },
      { name: 'x', kind: 'string', default: 'a"b', usage: 'line one\nline two' },
    ] as const satisfies readonly FlagDef[];
    assert.equal(usage(short), 'Usage of portstream:\n  -v\tverbose\n  -x string\n    \tline one\n    \tline two (default "a\\"b")\n');
  });
});
