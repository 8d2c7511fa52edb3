"""One module per chatbot model. The classes that get pickled import neither torch nor
sentence-transformers, so serving stays small; training-only imports happen inside functions."""
