/** Figures as JSON lines: `{"name","value","unit",...}`, one per measurement, on stdout. */
export interface Figure {
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  readonly [extra: string]: unknown;
}

export const figures: Figure[] = [];

export function report(figure: Figure): void {
  figures.push(figure);
  process.stdout.write(JSON.stringify(figure) + '\n');
}

export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export const round = (n: number, digits = 3): number => Number(n.toFixed(digits));

/** A summary table of every figure, on stderr so stdout stays pure JSON lines. */
export function printSummary(): void {
  const rows = figures.map((f) => [f.name, String(f.value), f.unit, typeof f['target'] === 'string' ? f['target'] : '']);
  const header = ['figure', 'value', 'unit', 'target'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string => r.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  process.stderr.write(['', line(header), ...rows.map(line), ''].join('\n'));
}
