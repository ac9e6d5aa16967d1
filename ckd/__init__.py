"""Class-wise knowledge distillation (CKD): a student distilled from the vMF class affinity of a teacher's final
layer (Seo, Lee & Kwak, Algorithm 2), against standard KD, under a shift of the student's training images.

Entry points: ``python -m ckd.teacher`` (train a teacher), ``python -m ckd.train`` (train one student),
``python -m ckd.experiment`` (a whole table: teacher, its gates, kappa by validation, students over losses x
shifts x seeds), ``python -m ckd.report`` (the table, intervals and verdict from results.json),
``python -m ckd.figures`` (Figure 2 with its controls), ``python -m ckd.analysis`` (activations over training,
affinity similarity, the vMF pair), ``python -m ckd.normalization_check`` (Section 2's check). See docs/ckd.md.
"""
