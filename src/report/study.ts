/**
 * Reading a study directory left by `rediff reproduce`: study.json, results/<system>.json (+ the
 * per-caption .jsonl), results/examples.json and the Stage II round reports. Anything missing
 * is recorded as missing (a system that was not run is `undefined` in `systems`), never an
 * error; a file that exists but is not JSON is a UserError naming it.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { StepTrace } from '../sampling/sampler.js';
import type { RoundReport } from '../training/self-correction.js';
import { readJsonFile } from '../util/atomic.js';
import { UserError } from '../util/errors.js';
import type { SystemResults } from '../evaluation/results-file.js';

/** Systems of the study, in report order, with the names the report uses. */
export const SYSTEMS = [
  { id: 'base', name: 'Base (LLaDA-V stand-in)' },
  { id: 'oracle', name: 'Oracle (perfect model)' },
  { id: 'baseline', name: 'Mask-pred baseline' },
  { id: 'stage1', name: 'ReDiff-Base (Stage I)' },
  { id: 'stage2-only', name: 'Stage II only' },
  { id: 'rediff', name: 'ReDiff (Stage I + II)' },
  { id: 'rediff-round2', name: 'ReDiff, Stage II round 2' },
  { id: 'ablation-hallucination-only', name: 'Stage I: hallucination only' },
  { id: 'ablation-syntax-only', name: 'Stage I: syntax only' },
  { id: 'ablation-dynamic', name: 'Stage I: dynamic ratio' },
  { id: 'stage1-canonical', name: 'Stage I, canonical captions' },
  { id: 'rediff-canonical', name: 'ReDiff, canonical captions' },
] as const;

/** The systems beyond the paper, trained on canonical captions, each judged on the targets too. */
export const CANONICAL_SYSTEMS = ['stage1-canonical', 'rediff-canonical'] as const;

/** Stage II runs whose rounds.json is read, with the report's names. */
export const STAGE2_RUNS = [
  { id: 'stage2', name: 'Stage I + II (from ReDiff-Base)' },
  { id: 'stage2-only', name: 'Stage II only (from the baseline)' },
  { id: 'stage2-canonical', name: 'Stage I + II on canonical captions' },
] as const;

/** Systems whose per-caption records are read (for paired differences in the targets). */
const RECORD_SYSTEMS = [
  'base',
  'oracle',
  'baseline',
  'stage1',
  'stage2-only',
  'rediff',
  'stage1-canonical',
  'rediff-canonical',
];

export const SAMPLER_NAMES: Record<string, string> = {
  llada: 'LLaDA sampler',
  rediff: 'refining sampler',
  threshold: 'confidence-threshold sampler',
  'threshold-rediff': 'confidence-threshold refining sampler',
};

export function samplerName(sampler: string): string {
  return SAMPLER_NAMES[sampler] ?? `${sampler} sampler`;
}

export function systemName(id: string, fallback?: string): string {
  return SYSTEMS.find((s) => s.id === id)?.name ?? fallback ?? id;
}

export interface StudyInfo {
  preset?: string;
  /** Studies before the shipped base trained their own starting point of this preset. */
  modelPreset?: string;
  /** The base checkpoint every system started from. */
  base?: { dir?: string; fromScratch?: boolean; weights?: string };
  startedAt?: string;
  finishedAt?: string;
  seconds?: number;
  timings?: Record<string, number>;
  settings?: unknown;
  machine?: { cpus?: number; node?: string };
}

export interface RecordScoreJSON {
  factuality: number;
  coverage: number;
  capture: number;
  fluency?: number;
  repeatRate?: number;
  hasUnreadable?: boolean;
  errors?: { text?: string; message?: string; reason?: string; correct?: string }[];
  [k: string]: unknown;
}

export interface CaptionRecordJSON {
  id: string;
  setting: string;
  caption: string;
  steps: number;
  score: RecordScoreJSON;
}

export interface ExampleJSON {
  sceneId: string;
  scene?: { objects?: { shape: string; color: string; size: string; place: string }[] };
  reference?: string;
  baseline?: { caption: string; score: RecordScoreJSON };
  rediff?: { caption: string; score: RecordScoreJSON; trace?: StepTrace[]; pieces?: string[] };
}

export interface Study {
  dir: string;
  /** study.json, or null when absent. */
  info: StudyInfo | null;
  /** Results per system id; a system that was not run is absent. Extra systems found are included. */
  systems: Map<string, SystemResults>;
  /** Per-caption records by system, then by setting label (only the systems the targets compare). */
  records: Map<string, Map<string, CaptionRecordJSON[]>>;
  rounds: Map<string, RoundReport[]>;
  examples: ExampleJSON[] | null;
  /** Things missing or skipped, one line each, for the report. */
  notes: string[];
}

async function readIfExists(file: string, what: string): Promise<unknown | undefined> {
  if (!fs.existsSync(file)) return undefined;
  return readJsonFile(file, what);
}

function isResults(v: unknown): v is SystemResults {
  return typeof v === 'object' && v !== null && Array.isArray((v as SystemResults).rows);
}

async function readRecords(file: string, notes: string[]): Promise<Map<string, CaptionRecordJSON[]>> {
  const bySetting = new Map<string, CaptionRecordJSON[]>();
  if (!fs.existsSync(file)) return bySetting;
  const lines = (await fsp.readFile(file, 'utf8')).split('\n');
  let bad = 0;
  for (const line of lines) {
    if (line.trim() === '') continue;
    let r: CaptionRecordJSON;
    try {
      r = JSON.parse(line) as CaptionRecordJSON;
    } catch {
      bad++;
      continue;
    }
    if (typeof r?.id !== 'string' || typeof r.setting !== 'string' || typeof r.score !== 'object') {
      bad++;
      continue;
    }
    const list = bySetting.get(r.setting) ?? [];
    list.push(r);
    bySetting.set(r.setting, list);
  }
  if (bad > 0) notes.push(`${path.basename(file)}: ${bad} unreadable line(s) skipped`);
  return bySetting;
}

export async function readStudy(studyDir: string): Promise<Study> {
  if (!fs.existsSync(studyDir) || !fs.statSync(studyDir).isDirectory())
    throw new UserError(`study directory not found: ${studyDir}`);
  const notes: string[] = [];
  const info = (await readIfExists(path.join(studyDir, 'study.json'), 'study summary')) as StudyInfo | undefined;
  if (info === undefined) notes.push('study.json not found: run settings and timings are unknown');

  const resultsDir = path.join(studyDir, 'results');
  const ids: string[] = SYSTEMS.map((s) => s.id);
  if (fs.existsSync(resultsDir)) {
    for (const f of fs.readdirSync(resultsDir).sort()) {
      const id = f.replace(/\.json$/, '');
      if (f.endsWith('.json') && id !== 'examples' && !ids.includes(id)) ids.push(id);
    }
  }
  const systems = new Map<string, SystemResults>();
  const records = new Map<string, Map<string, CaptionRecordJSON[]>>();
  for (const id of ids) {
    const v = await readIfExists(path.join(resultsDir, `${id}.json`), `results of ${id}`);
    if (v === undefined) continue;
    if (!isResults(v)) {
      notes.push(`results/${id}.json has no rows: treated as not run`);
      continue;
    }
    systems.set(id, v);
    if (RECORD_SYSTEMS.includes(id)) records.set(id, await readRecords(path.join(resultsDir, `${id}.jsonl`), notes));
  }

  const rounds = new Map<string, RoundReport[]>();
  for (const run of STAGE2_RUNS) {
    const v = await readIfExists(path.join(studyDir, run.id, 'rounds.json'), `Stage II rounds of ${run.id}`);
    if (Array.isArray(v)) rounds.set(run.id, v as RoundReport[]);
  }

  const ex = await readIfExists(path.join(resultsDir, 'examples.json'), 'qualitative examples');
  const examples = Array.isArray(ex) ? (ex as ExampleJSON[]) : null;
  if (examples === null) notes.push('results/examples.json not found: no qualitative examples');
  return { dir: studyDir, info: info ?? null, systems, records, rounds, examples, notes };
}
