/** The models shipped with rediff (models/ at the package root), by name. */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const SHIPPED_MODELS = ['rediff', 'baseline', 'base'] as const;
export type ShippedModel = (typeof SHIPPED_MODELS)[number];

/** The package root (two levels above this file in both src/ and dist/). */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export const isShippedModel = (name: string): name is ShippedModel =>
  (SHIPPED_MODELS as readonly string[]).includes(name);

export function shippedModelDir(name: ShippedModel): string {
  return path.join(PACKAGE_ROOT, 'models', name);
}
