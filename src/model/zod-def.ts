import type { z } from 'zod';

/**
 * The parts of a zod 4 schema's definition that we walk (secret marks, config hints, mapping field
 * names). zod has no public API for walking a schema, so its internal `_zod.def` is read here, in
 * one place, to adapt if zod changes it.
 */
export interface SchemaDef {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  out?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  valueType?: z.ZodType;
  element?: z.ZodType;
  options?: z.ZodType[];
  left?: z.ZodType;
  right?: z.ZodType;
}

export const defOf = (s: z.ZodType): SchemaDef => (s as unknown as { _zod: { def: SchemaDef } })._zod.def;
