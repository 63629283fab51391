"""Models: the embedded tiny Llama + character tokenizer (`tiny`), and loading HF directories (`load`)."""
