/**
 * Browser stand-in for src/tokenizer/huggingface.ts (which reads files and pulls in the Hugging
 * Face tokenizer library). The page's in-browser mode supports word tokenizers only.
 */
export class HuggingFaceTokenizer {
  static fromJSON(_json: unknown, where = 'tokenizer'): never {
    throw new Error(`${where}: Hugging Face tokenizers are not supported in the in-browser mode; use the server mode`);
  }
}
