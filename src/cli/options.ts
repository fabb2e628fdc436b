/** Flag parsers for commander: each rejects a bad value with a message naming the flag. */
import { InvalidArgumentError } from 'commander';

export function intOption(flag: string, min = 1, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(
        `${flag} takes a whole number ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`}, ` +
          `got "${value}"`,
      );
    }
    return n;
  };
}

export function floatOption(flag: string, min = -Infinity, max = Infinity, { exclusiveMin = false } = {}) {
  return (value: string): number => {
    const n = Number(value);
    const okMin = exclusiveMin ? n > min : n >= min;
    if (value.trim() === '' || !Number.isFinite(n) || !okMin || n > max) {
      const range = `${exclusiveMin ? '>' : '>='} ${min}${max < Infinity ? ` and <= ${max}` : ''}`;
      throw new InvalidArgumentError(`${flag} takes a number ${range}, got "${value}"`);
    }
    return n;
  };
}

export function choiceOption<T extends string>(flag: string, choices: readonly T[]) {
  return (value: string): T => {
    if (!(choices as readonly string[]).includes(value)) {
      throw new InvalidArgumentError(`${flag} must be one of ${choices.join(', ')}, got "${value}"`);
    }
    return value as T;
  };
}

/** A comma-separated list of whole numbers, e.g. --tokens-per-step 1,2,4,8. */
export function intListOption(flag: string, min = 1) {
  const one = intOption(flag, min);
  return (value: string): number[] => value.split(',').map((v) => one(v.trim()));
}
