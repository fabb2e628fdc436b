/** Learning rate: linear warm-up, then cosine decay to `minRatio` of the peak. */
export interface ScheduleOptions {
  peak: number;
  warmupSteps: number;
  totalSteps: number;
  minRatio: number;
}

export function learningRate(step: number, s: ScheduleOptions): number {
  if (step < s.warmupSteps) return (s.peak * (step + 1)) / s.warmupSteps;
  const span = Math.max(1, s.totalSteps - s.warmupSteps);
  const progress = Math.min(1, (step - s.warmupSteps) / span);
  const cos = 0.5 * (1 + Math.cos(Math.PI * progress));
  return s.peak * (s.minRatio + (1 - s.minRatio) * cos);
}
