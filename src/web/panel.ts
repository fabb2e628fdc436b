/**
 * One model's column on the page: the caption as it builds up step by step (newly committed
 * tokens and refined tokens marked in different colours, as the paper's Figure 4), the final
 * caption with wrong claims highlighted, and the scores when the image is a generated scene.
 */
import { type CaptionScore, scoreCaption } from '../benchmark/metrics.js';
import type { Scene } from '../benchmark/scene.js';
import { EOS_ID, MASK_ID, PAD_ID } from '../tokenizer/tokenizer.js';

export interface Frame {
  /** 1-based step number. */
  step: number;
  tokens: number[];
  committed: Set<number>;
  refined: Map<number, number>;
}

/** Display pieces of a token id. */
export type Pieces = (ids: readonly number[]) => string[];

const el = <K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const pct = (x: number): string => `${(100 * x).toFixed(0)}%`;

/**
 * The final caption as display pieces (up to the first EOS, padding dropped), each with the
 * message of the false claim it belongs to, if any, and the score against the scene.
 */
export function finalCaption(
  tokens: readonly number[],
  pieces: Pieces,
  scene: Scene | null,
): {
  parts: { pos: number; piece: string; wrong: string | null }[];
  score: CaptionScore | null;
} {
  const all = pieces(tokens);
  const parts: { pos: number; piece: string; wrong: string | null }[] = [];
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i] === EOS_ID) break;
    if (tokens[i] === PAD_ID) continue;
    parts.push({ pos: i, piece: all[i]!, wrong: null });
  }
  if (!scene) return { parts, score: null };
  const score = scoreCaption(
    scene,
    parts.map((p) => p.piece),
  );
  for (const e of score.errors) {
    for (const [a, b] of e.blame)
      for (let k = a; k < b && k < parts.length; k++) parts[k]!.wrong ??= e.message || e.reason;
  }
  return { parts, score };
}

export class Panel {
  readonly root: HTMLElement;
  private readonly metaLeft: HTMLElement;
  private readonly metaRight: HTMLElement;
  private readonly tokensBox: HTMLElement;
  private readonly finalBox: HTMLElement;
  private readonly finalText: HTMLElement;
  private readonly scoresBox: HTMLTableElement;
  private readonly errorsBox: HTMLUListElement;
  frames: Frame[] = [];
  maxSteps = 0;
  refinements = 0;
  private shown = 0;
  /** The final caption is computed; it is revealed once the last frame is on screen. */
  private finalReady = false;
  private pieces: Pieces = (ids) => ids.map(String);

  constructor(
    readonly model: string,
    title: string,
    subtitle: string,
  ) {
    this.root = el('article', 'panel');
    this.root.id = `panel-${model}`;
    const h = el('h2', undefined, title);
    h.append(' ', el('small', undefined, subtitle));
    const meta = el('div', 'meta');
    this.metaLeft = el('span', 'step-label', 'not run yet');
    this.metaRight = el('span', 'timing');
    meta.append(this.metaLeft, this.metaRight);
    this.tokensBox = el('div', 'tokens');
    this.finalBox = el('div', 'final');
    this.finalBox.hidden = true;
    this.finalText = el('p', 'final-text');
    this.scoresBox = el('table', 'scores');
    this.errorsBox = el('ul', 'errors');
    this.finalBox.append(el('h3', undefined, 'Final caption'), this.finalText, this.scoresBox, this.errorsBox);
    this.root.append(h, meta, this.tokensBox, this.finalBox);
    this.setState('idle');
  }

  setState(state: 'idle' | 'loading' | 'running' | 'done' | 'error'): void {
    this.root.dataset.state = state;
  }

  get state(): string {
    return this.root.dataset.state ?? 'idle';
  }

  reset(pieces: Pieces): void {
    this.pieces = pieces;
    this.frames = [];
    this.maxSteps = 0;
    this.refinements = 0;
    this.shown = 0;
    this.root.dataset.refinements = '0';
    this.root.dataset.steps = '0';
    this.tokensBox.replaceChildren();
    this.finalBox.hidden = true;
    this.finalReady = false;
    this.metaRight.textContent = '';
    this.setState('loading');
    this.metaLeft.textContent = 'waiting…';
  }

  start(maxSteps: number, length: number): void {
    this.maxSteps = maxSteps;
    this.setState('running');
    this.renderTokens({
      step: 0,
      tokens: new Array<number>(length).fill(MASK_ID),
      committed: new Set(),
      refined: new Map(),
    });
    this.metaLeft.textContent = `step 0 / at most ${maxSteps}`;
  }

  /** A step arrived (the page shows it, paced, see main.ts). */
  step(frame: Frame): void {
    this.frames.push(frame);
    this.refinements += frame.refined.size;
    this.root.dataset.refinements = String(this.refinements);
    this.root.dataset.steps = String(this.frames.length);
  }

  done(info: { steps: number; ms: number; where: string }): void {
    this.setState('done');
    this.metaRight.textContent =
      `${info.steps} steps · ${info.ms.toFixed(0)} ms · ${info.where} · ${this.refinements} ` +
      `refinement${this.refinements === 1 ? '' : 's'}`;
  }

  fail(message: string): void {
    this.setState('error');
    this.metaLeft.textContent = `error: ${message}`;
  }

  /** Shows frame `n` (1-based; clamped to the frames this panel has). */
  show(n: number): void {
    if (this.frames.length === 0) return;
    const i = Math.max(1, Math.min(n, this.frames.length));
    this.shown = i;
    const f = this.frames[i - 1]!;
    this.renderTokens(f);
    const ended = this.state === 'done' || this.state === 'error';
    const finished = this.state === 'done' && i === this.frames.length;
    if (finished && this.finalReady) this.finalBox.hidden = false;
    // One count everywhere (the slider's too): the frame's place in the run, out of the steps
    // taken once the run has ended (decoding stops early at EOS), else out of the most it may take.
    if (this.state !== 'error')
      this.metaLeft.textContent =
        `step ${i} / ` +
        `${ended ? this.frames.length : `at most ${this.maxSteps || this.frames.length}`}${finished ? ' (final)' : ''}`;
  }

  get shownStep(): number {
    return this.shown;
  }

  private renderTokens(f: Frame): void {
    const spans: HTMLElement[] = [];
    const pieces = this.pieces(f.tokens);
    // The response ends where the trailing run of end tokens starts; an end token before that
    // (one a refinement wrote) is shown in place.
    let end = f.tokens.length;
    while (end > 0 && f.tokens[end - 1] === EOS_ID) end--;
    for (let i = 0; i < f.tokens.length; i++) {
      const id = f.tokens[i]!;
      let span: HTMLElement;
      if (id === MASK_ID) span = el('span', 'tok mask');
      else if (id === EOS_ID) span = el('span', 'tok special', i >= end ? '⏎ end' : '⏎');
      else span = el('span', id === PAD_ID ? 'tok special' : 'tok', pieces[i]);
      if (f.refined.has(i)) {
        span.classList.add('refined');
        const was = this.pieces([f.refined.get(i)!])[0]!;
        span.title = `refined at step ${f.step}: was "${was}"`;
        span.prepend(el('s', undefined, was === '[MASK]' ? '' : was));
      } else if (f.committed.has(i)) {
        span.classList.add('committed');
        span.title = `committed at step ${f.step}`;
      }
      spans.push(span);
      if (i >= end) break;
    }
    this.tokensBox.replaceChildren(...spans);
  }

  /** The final caption, with wrong claims highlighted and the scores when the scene is known. */
  showFinal(tokens: readonly number[], scene: Scene | null): CaptionScore | null {
    const { parts, score } = finalCaption(tokens, this.pieces, scene);
    const nodes: Node[] = [];
    parts.forEach((k, idx) => {
      const punct = /^[^a-z0-9[]/i.test(k.piece);
      if (idx > 0 && !punct) nodes.push(document.createTextNode(' '));
      if (k.wrong !== null) {
        const m = el('mark', 'wrong', k.piece);
        m.title = k.wrong;
        nodes.push(m);
      } else nodes.push(document.createTextNode(k.piece));
    });
    this.finalText.replaceChildren(...(nodes.length > 0 ? nodes : [document.createTextNode('(empty)')]));
    this.scoresBox.replaceChildren();
    this.errorsBox.replaceChildren();
    if (score) {
      const row = (name: string, value: string, note: string): void => {
        const tr = el('tr');
        tr.append(el('td', undefined, name), el('td', 'v', value), el('td', undefined, note));
        this.scoresBox.append(tr);
      };
      const unreadable =
        score.unreadable.length > 0
          ? `, ${score.unreadable.length} unreadable span${score.unreadable.length === 1 ? '' : 's'} counted against it`
          : '';
      row(
        'Factuality',
        pct(score.factuality),
        `${score.trueClaims} of ${score.claims} claims true${unreadable} (the background left out)`,
      );
      row(
        'Described',
        pct(score.coverage),
        `${score.describedObjects} of ${score.objects} objects: size, colour, shape and place all right`,
      );
      row(
        'CAPTURE',
        score.capture.toFixed(3),
        `F1 objects ${score.f1Object.toFixed(2)}, attributes ${score.f1Attribute.toFixed(2)}, relations ` +
          `${score.f1Relation.toFixed(2)}`,
      );
      for (const e of score.errors.slice(0, 8))
        this.errorsBox.append(el('li', undefined, `“${e.text}”: ${e.message || e.reason}`));
      if (score.errors.length > 8) this.errorsBox.append(el('li', undefined, `… ${score.errors.length - 8} more`));
      this.root.dataset.wrongClaims = String(score.errors.length);
    }
    this.finalReady = true;
    if (this.shown === this.frames.length) this.show(this.shown);
    return score;
  }
}
