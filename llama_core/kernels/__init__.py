"""How weights are held and multiplied at inference: the decode layout (weight_layout), weight-only int8 and
int4 (int8, int4, quantized_model), the per-machine kernel probe and dtype choice (probe, dtype_choice), and
giving back a replaced weight's file pages at load (page_release)."""
