// Models: tensors on OpenBLAS, GNN and MoE layers with explicit backward passes, optimizers
// and dataset loaders. Knows nothing of networking (see ../shared/DESIGN.md, "Models").
